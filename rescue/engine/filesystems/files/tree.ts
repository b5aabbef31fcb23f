/**
 * Path resolution shared by every filesystem reader: a reader exposes its directory tree as nodes
 * (`FileTree`), this turns '/'-separated paths into nodes and implements `VolumeFiles` on top.
 * '..' is resolved against the directories actually walked (a stack), so a symbolic link to a
 * directory followed by '..' lands where the kernel would land.
 */
import { RescueError } from '../../errors.ts';
import type { FileStat, VolumeFiles } from './index.ts';

/** readFile's default limit: configuration files and boot loaders, not disk images. */
export const DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024;
/** Symbolic links followed while resolving one path (the kernel's historic nesting limit). */
export const MAX_SYMLINK_FOLLOWS = 8;
/** Components of one path, symbolic-link targets included: keeps a crafted target from growing it. */
const MAX_PATH_COMPONENTS = 4096;
/** Longest symbolic-link target we follow (PATH_MAX). */
export const MAX_SYMLINK_TARGET = 4096;

export interface TreeNode {
  kind: FileStat['type'];
  size: number;
  mtime?: Date;
}

/** What a filesystem reader provides; everything else (paths, links, limits) is done here. */
export interface FileTree<N extends TreeNode> {
  /** Whether symbolic links in the middle of a path are followed (ext; NTFS reparse points are not). */
  readonly followsSymlinks: boolean;
  root(): Promise<N>;
  /** The entry `name` of directory `dir`, or undefined when there is none. */
  lookup(dir: N, name: string): Promise<N | undefined>;
  /** Names in `dir`, without '.' and '..', in on-disk order. */
  list(dir: N): Promise<string[]>;
  /** Target of a node of kind 'symlink'. */
  readLink(node: N): Promise<string>;
  /** Contents of a node of kind 'file' whose size is at most `maxBytes`. */
  read(node: N, maxBytes: number): Promise<Buffer>;
}

function splitPath(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

function notFound(path: string): RescueError {
  return new RescueError(
    'E_FILE_NOT_FOUND',
    `${path} does not exist on this volume`,
    'Check the path; names are case-sensitive on ext, case-insensitive on NTFS, FAT and exFAT.',
  );
}

export function treeFiles<N extends TreeNode>(tree: FileTree<N>): VolumeFiles {
  /**
   * The node `path` names, or undefined when a component is missing or is not a directory.
   * The last component's symbolic link is followed only when `followLast`.
   */
  async function resolve(path: string, followLast: boolean): Promise<N | undefined> {
    if (typeof path !== 'string')
      throw new RescueError(
        'E_BAD_RANGE',
        'A file path must be a string',
        'This is a bug; please report it.',
      );
    const root = await tree.root();
    const stack: N[] = [root];
    const queue = splitPath(path);
    let follows = 0;
    let steps = 0;
    while (queue.length > 0) {
      if (++steps > MAX_PATH_COMPONENTS) throw loop(path);
      const name = queue.shift() as string;
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const dir = stack[stack.length - 1];
      if (dir.kind !== 'dir') return undefined;
      const node = await tree.lookup(dir, name);
      if (!node) return undefined;
      if (node.kind === 'symlink' && tree.followsSymlinks && (queue.length > 0 || followLast)) {
        if (++follows > MAX_SYMLINK_FOLLOWS) throw loop(path);
        const target = await tree.readLink(node);
        // An empty target names nothing (the kernel answers ENOENT).
        if (target === '') return undefined;
        if (target.startsWith('/')) stack.length = 1;
        const parts = splitPath(target);
        if (parts.length + queue.length > MAX_PATH_COMPONENTS) throw loop(path);
        queue.unshift(...parts);
        continue;
      }
      stack.push(node);
    }
    return stack[stack.length - 1];
  }

  function loop(path: string): RescueError {
    return new RescueError(
      'E_SYMLINK_LOOP',
      `Too many levels of symbolic links in ${path} (more than ${MAX_SYMLINK_FOLLOWS} followed)`,
      'The links loop or chain too deeply; look at them with the explore view or from a running system.',
    );
  }

  return {
    async stat(path) {
      const node = await resolve(path, false);
      if (!node) return undefined;
      const st: FileStat = { type: node.kind, size: node.size };
      if (node.mtime) st.mtime = node.mtime;
      if (node.kind === 'symlink') st.target = await tree.readLink(node);
      return st;
    },
    async readdir(path) {
      const node = await resolve(path, true);
      if (!node) throw notFound(path);
      if (node.kind !== 'dir') {
        throw new RescueError(
          'E_NOT_A_DIRECTORY',
          `${path} is not a directory`,
          'Give the path of a directory.',
        );
      }
      return tree.list(node);
    },
    async readFile(path, opts) {
      const maxBytes = opts?.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
      if (!Number.isSafeInteger(maxBytes) || maxBytes < 0)
        throw new RescueError(
          'E_BAD_RANGE',
          `Invalid maxBytes ${maxBytes}`,
          'This is a bug; please report it.',
        );
      const node = await resolve(path, true);
      if (!node) throw notFound(path);
      if (node.kind !== 'file') {
        throw new RescueError(
          'E_NOT_A_FILE',
          `${path} is ${node.kind === 'dir' ? 'a directory' : 'not a regular file'}`,
          'Give the path of a regular file.',
        );
      }
      if (node.size > maxBytes) {
        throw new RescueError(
          'E_FILE_TOO_LARGE',
          `${path} has ${node.size} bytes, more than the ${maxBytes} asked for`,
          'Read it in a job that streams it, or raise maxBytes.',
          { size: node.size, maxBytes },
        );
      }
      return tree.read(node, maxBytes);
    },
  };
}

/**
 * Upper case for case-insensitive names (NTFS, FAT, exFAT), one UTF-16 unit at a time as their
 * up-case tables work: ASCII directly, other characters through their simple (1:1) upper case.
 */
export function upcaseName(name: string): string {
  let out = '';
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x80) {
      out += String.fromCharCode(c >= 0x61 && c <= 0x7a ? c - 0x20 : c);
    } else {
      const ch = name[i];
      const up = ch.toUpperCase();
      out += up.length === 1 ? up : ch;
    }
  }
  return out;
}

/** Windows FILETIME (100 ns units since 1601-01-01 UTC) as a Date; undefined for 0 or nonsense. */
export function fromFiletime(ft: bigint): Date | undefined {
  if (ft <= 0n) return undefined;
  const ms = Number((ft - 116444736000000000n) / 10000n);
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/**
 * A DOS date/time pair (FAT, exFAT) as a Date. The fields are local time of an unknown zone: they
 * are taken as UTC unless the caller knows the offset (exFAT records one).
 */
export function fromDosDateTime(
  date: number,
  time: number,
  extraMs = 0,
  utcOffsetMinutes = 0,
): Date | undefined {
  if (date === 0) return undefined;
  const year = 1980 + (date >> 9);
  const month = (date >> 5) & 0x0f;
  const day = date & 0x1f;
  const hour = time >> 11;
  const minute = (time >> 5) & 0x3f;
  const second = (time & 0x1f) * 2;
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined;
  const ms = Date.UTC(year, month - 1, day, hour, minute, second) + extraMs - utcOffsetMinutes * 60_000;
  return new Date(ms);
}
