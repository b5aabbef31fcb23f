/**
 * Running the filesystems' own tools (e2fsck, resize2fs, ntfsresize, fsck.fat) as cancellable child
 * processes, and giving them a block device for a byte range of a file or disk (a loop device that
 * is always detached again).
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { FileSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import type { FsTarget } from './fs-resize.ts';

export interface ToolResult {
  code: number;
  /** stdout and stderr interleaved as they arrived, split into lines. */
  lines: string[];
}

export interface ToolOptions {
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Written to the tool's stdin (then closed); stdin is empty otherwise. */
  input?: string;
}

/** Lines of a tool's output kept for error messages. */
const TAIL_LINES = 12;
/** A cancelled tool gets this long to exit after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 3000;
/** Output kept in memory per tool run (progress bars can be long). */
const MAX_KEPT_LINES = 5000;

/** Which Debian package brings which tool: for the "not installed" remedy. */
const PACKAGE_OF: Record<string, string> = {
  e2fsck: 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  dumpe2fs: 'e2fsprogs',
  ntfsresize: 'ntfs-3g',
  'fsck.fat': 'dosfstools',
  losetup: 'util-linux',
};

export function cancelled(what: string): RescueError {
  return new RescueError('E_CANCELLED', `${what} was cancelled`, 'Run it again when you want to.');
}

/** The last lines of a tool's output, for a message (progress-bar noise and blank lines dropped). */
export function tail(lines: readonly string[], n = TAIL_LINES): string {
  return lines
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^\d+(\.\d+)? percent completed/.test(l))
    .slice(-n)
    .join('\n');
}

/**
 * Runs `cmd args`, never through a shell, with LC_ALL=C so its messages can be parsed. Resolves
 * with the exit code (non-zero included); rejects only when the tool is missing, cannot be started,
 * or the signal aborted it (the child is killed and awaited first).
 */
export function runTool(cmd: string, args: readonly string[], opts: ToolOptions = {}): Promise<ToolResult> {
  const { signal, log } = opts;
  if (signal?.aborted) return Promise.reject(cancelled(`${cmd} ${args.join(' ')}`));
  return new Promise<ToolResult>((resolve, reject) => {
    const child = spawn(cmd, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', LANG: 'C', PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
    });
    const lines: string[] = [];
    const partial = { out: '', err: '' };
    const take = (key: 'out' | 'err', chunk: Buffer) => {
      // Progress bars rewrite one line with \r; treat those as line ends too.
      const text = partial[key] + chunk.toString('utf8');
      const parts = text.split(/\r?\n|\r/);
      partial[key] = parts.pop() ?? '';
      for (const line of parts) {
        if (lines.length >= MAX_KEPT_LINES) lines.splice(0, lines.length - MAX_KEPT_LINES + 1);
        lines.push(line);
        if (line.trim() !== '' && !/^\s*\d+(\.\d+)? percent completed/.test(line)) log?.(`${cmd}: ${line}`);
      }
    };
    child.stdout.on('data', (c: Buffer) => take('out', c));
    child.stderr.on('data', (c: Buffer) => take('err', c));
    child.stdin.on('error', () => {
      // A tool that exits without reading its stdin closes the pipe: not an error of ours.
    });
    child.stdin.end(opts.input ?? '');
    let aborted = false;
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      aborted = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: NodeJS.ErrnoException | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    child.on('close', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      for (const key of ['out', 'err'] as const) if (partial[key] !== '') lines.push(partial[key]);
      if (spawnError) {
        if (spawnError.code === 'ENOENT') {
          const pkg = PACKAGE_OF[cmd];
          reject(
            new RescueError(
              'E_RESIZE_TOOL_MISSING',
              `${cmd} is not installed`,
              pkg
                ? `Install the Debian package ${pkg} (sh scripts/host-setup.sh installs everything rescue uses).`
                : 'Install it, or use the rescue environment, which has every tool.',
            ),
          );
        } else {
          reject(
            new RescueError(
              'E_RESIZE_FAILED',
              `${cmd} could not be started: ${spawnError.message}`,
              'Check that the tool is installed and executable, and run rescue as root.',
            ),
          );
        }
        return;
      }
      if (aborted) {
        reject(cancelled(`${cmd} ${args.join(' ')}`));
        return;
      }
      resolve({ code: code ?? (sig ? 128 : -1), lines });
    });
  });
}

/** Size of a regular file or block device, and which of the two it is. */
async function describePath(path: string): Promise<{ size: number; blockDevice: boolean }> {
  let st: Awaited<ReturnType<typeof fsp.stat>>;
  try {
    st = await fsp.stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new RescueError('E_NOT_FOUND', `${path} does not exist`, 'Check the path.');
    throw new RescueError('E_OPEN', `Cannot look at ${path}: ${(e as Error).message}`, 'Check the path.');
  }
  if (st.isFile()) return { size: st.size, blockDevice: false };
  if (st.isBlockDevice()) {
    const src = await FileSource.open(path);
    try {
      return { size: src.size, blockDevice: true };
    } finally {
      await src.close();
    }
  }
  throw new RescueError(
    'E_NOT_A_DISK',
    `${path} is neither a block device nor a regular file`,
    'Give a disk, a partition or an image file.',
  );
}

/** Loop devices want byte offsets and sizes in whole 512-byte sectors. */
const LOOP_SECTOR = 512;
const DETACH_ATTEMPTS = 5;
const DETACH_RETRY_MS = 200;

async function detachLoop(dev: string, log?: (line: string) => void): Promise<void> {
  for (let attempt = 1; attempt <= DETACH_ATTEMPTS; attempt++) {
    const r = await runTool('losetup', ['-d', dev]);
    if (r.code === 0) return;
    if (attempt === DETACH_ATTEMPTS) {
      // The kernel sets autoclear on a busy device, so it goes away once its last user closes it.
      log?.(`losetup -d ${dev} failed: ${tail(r.lines, 3)}`);
      return;
    }
    await new Promise((res) => setTimeout(res, DETACH_RETRY_MS * attempt));
  }
}

/**
 * Calls `fn` with a path the tools can open that shows exactly the bytes of `t`: the file or device
 * itself when `t` covers all of it (and `fn` accepts a plain file, or it is a device), otherwise a
 * loop device over the range, detached afterwards whatever happens (errors and aborts included).
 */
export async function withDevice<T>(
  t: FsTarget,
  opts: { acceptsFile: boolean; log?: (line: string) => void; signal?: AbortSignal },
  fn: (dev: string) => Promise<T>,
): Promise<T> {
  if (
    !Number.isSafeInteger(t.offset) ||
    !Number.isSafeInteger(t.size) ||
    t.offset < 0 ||
    t.size <= 0 ||
    t.offset % LOOP_SECTOR !== 0 ||
    t.size % LOOP_SECTOR !== 0
  ) {
    throw new RescueError(
      'E_BAD_RANGE',
      `Invalid filesystem range on ${t.path}: offset ${t.offset}, size ${t.size} (whole 512-byte sectors needed)`,
      'This is a bug; please report it.',
    );
  }
  const where = await describePath(t.path);
  if (t.offset + t.size > where.size) {
    throw new RescueError(
      'E_PARTITION_BEYOND_DISK',
      `The filesystem range ${t.offset}+${t.size} lies outside ${t.path} (${where.size} bytes)`,
      'The partition table describes space the disk does not have: the image may be truncated.',
    );
  }
  if (t.offset === 0 && t.size === where.size && (where.blockDevice || opts.acceptsFile)) return fn(t.path);
  if (opts.signal?.aborted) throw cancelled(`Resizing on ${t.path}`);
  // losetup is not given the signal: killed half-way it could leave a device we do not know of.
  const r = await runTool('losetup', [
    '--find',
    '--show',
    '--offset',
    String(t.offset),
    '--sizelimit',
    String(t.size),
    t.path,
  ]);
  const dev = r.lines.map((l) => l.trim()).find((l) => l.startsWith('/dev/'));
  if (r.code !== 0 || !dev) {
    throw new RescueError(
      'E_LOOP_DEVICE',
      `No loop device could be attached to ${t.path} at offset ${t.offset}: ${tail(r.lines, 3)}`,
      'Loop devices need root and the loop kernel module (modprobe loop); free unused ones with losetup -D.',
    );
  }
  opts.log?.(`attached ${dev} to ${t.path} at offset ${t.offset}, ${t.size} bytes`);
  try {
    const attached = await describePath(dev);
    if (attached.size !== t.size) {
      throw new RescueError(
        'E_LOOP_DEVICE',
        `Loop device ${dev} over ${t.path} has ${attached.size} bytes instead of ${t.size}`,
        'The kernel did not honour the size limit; report it with the kernel version.',
      );
    }
    return await fn(dev);
  } finally {
    await detachLoop(dev, opts.log);
  }
}
