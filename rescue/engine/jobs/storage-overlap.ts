/**
 * Whether two paths reach the same bytes: the same file or device under another name, a partition
 * of a disk and the disk itself, a loop device over an image file (at an offset, or partitioned),
 * a loop device over a partition. A clone must never write where it reads; a restore never where
 * its image lies. Everything is resolved to the object that finally holds the bytes — a regular
 * file (device:inode) or a whole disk (major:minor) — and a byte range of it.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import {
  parseDevNumber,
  readSysNumber,
  readSysString,
  resolveSysLink,
  splitDevNumber,
} from '../devices/sysfs.ts';

const SYS_DEV_BLOCK = '/sys/dev/block';
const SECTOR = 512;
/** Loop devices over loop devices over …: deeper chains than this are not followed. */
const MAX_DEPTH = 4;

export interface StorageSpan {
  /** The object holding the bytes: "file 254:0:1234" (device:inode) or "disk 8:16". */
  object: string;
  /** Byte range of that object which the path shows. */
  start: number;
  end: number;
  /** How the path reaches the object, outermost first ("/dev/loop3p1", "loop device over /srv/a.img"). */
  via: string[];
}

function fileObject(dev: number, ino: number): string {
  const d = splitDevNumber(dev);
  return `file ${d.major}:${d.minor}:${ino}`;
}

/** losetup's view of a loop device's backing file (inode and filesystem), which survives renames. */
function losetupBacking(dev: string): Promise<{ object: string; file: string } | undefined> {
  return new Promise((done) => {
    execFile(
      'losetup',
      ['--json', '--list', '-O', 'NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN', dev],
      { timeout: 10_000 },
      (err, stdout) => {
        if (err) return done(undefined);
        try {
          const j = JSON.parse(stdout) as {
            loopdevices?: { 'back-file'?: string; 'back-ino'?: number | string; 'back-maj:min'?: string }[];
          };
          const l = j.loopdevices?.[0];
          const num = parseDevNumber(String(l?.['back-maj:min'] ?? '').trim());
          const ino = Number(l?.['back-ino']);
          if (!l || !num || !Number.isSafeInteger(ino)) return done(undefined);
          done({ object: `file ${num.major}:${num.minor}:${ino}`, file: String(l['back-file'] ?? '') });
        } catch {
          done(undefined);
        }
      },
    );
  });
}

/** What `path` shows, down to the file or disk that holds it; undefined when it does not exist. */
export async function storageSpan(path: string, depth = 0): Promise<StorageSpan | undefined> {
  const st = await fsp.stat(path).catch(() => undefined);
  if (!st) return undefined;
  // Every byte of a file, and an empty file too, is the file.
  if (st.isFile())
    return { object: fileObject(st.dev, st.ino), start: 0, end: Math.max(1, st.size), via: [] };
  if (!st.isBlockDevice()) return undefined;
  const { major, minor } = splitDevNumber(st.rdev);
  const sys = await resolveSysLink(`${SYS_DEV_BLOCK}/${major}:${minor}`);
  // Not in sysfs (another namespace, a stale node): the device number alone identifies it.
  if (!sys) return { object: `disk ${major}:${minor}`, start: 0, end: Number.POSITIVE_INFINITY, via: [] };
  const size = ((await readSysNumber(`${sys}/size`)) ?? 0) * SECTOR;
  const isPartition = (await readSysString(`${sys}/partition`)) !== undefined;
  const diskDir = isPartition ? dirname(sys) : sys;
  const start = isPartition ? ((await readSysNumber(`${sys}/start`)) ?? 0) * SECTOR : 0;
  const disk = parseDevNumber((await readSysString(`${diskDir}/dev`)) ?? '') ?? { major, minor };
  const span: StorageSpan = { object: `disk ${disk.major}:${disk.minor}`, start, end: start + size, via: [] };
  const backing = await readSysString(`${diskDir}/loop/backing_file`);
  if (backing === undefined || depth >= MAX_DEPTH) return span;
  // A loop device: its bytes are those of the backing file (or device) from its offset on.
  const offset = (await readSysNumber(`${diskDir}/loop/offset`)) ?? 0;
  const loopNode = `/dev/${diskDir.slice(diskDir.lastIndexOf('/') + 1)}`;
  const loop = isPartition ? `a partition of loop device ${loopNode}` : 'a loop device';
  const bst = await fsp.stat(backing).catch(() => undefined);
  if (bst?.isBlockDevice()) {
    const inner = await storageSpan(backing, depth + 1);
    if (inner) {
      return {
        object: inner.object,
        start: inner.start + offset + start,
        end: inner.start + offset + start + size,
        via: [`${loop} over ${backing}`, ...inner.via],
      };
    }
  }
  // A file: identified by inode (the path in sysfs may be stale or "(deleted)").
  const viaLosetup = await losetupBacking(loopNode);
  const object = viaLosetup?.object ?? (bst?.isFile() ? fileObject(bst.dev, bst.ino) : undefined);
  if (!object) return span;
  return {
    object,
    start: offset + start,
    end: offset + start + size,
    via: [`${loop} over ${viaLosetup?.file || backing}`],
  };
}

/**
 * Why writing to `target` would touch the bytes of `source`, in words, or undefined when it would
 * not. Both are paths as given; a target that does not exist yet overlaps nothing.
 */
export async function storageOverlap(source: string, target: string): Promise<string | undefined> {
  const [s, t] = await Promise.all([storageSpan(source), storageSpan(target)]);
  if (!s || !t || s.object !== t.object) return undefined;
  if (!(s.start < t.end && t.start < s.end)) return undefined;
  const how = (x: StorageSpan, p: string) => (x.via.length > 0 ? `${p} (${x.via.join(', ')})` : p);
  if (s.start === t.start && s.end === t.end) {
    return `${how(t, target)} is ${how(s, source)} itself`;
  }
  if (t.start <= s.start && s.end <= t.end) return `${how(t, target)} contains ${how(s, source)}`;
  if (s.start <= t.start && t.end <= s.end) return `${how(t, target)} lies inside ${how(s, source)}`;
  return `${how(t, target)} overlaps ${how(s, source)}`;
}
