/**
 * Merge (manual 7.4): a full backup and the incremental points after it become one new full image
 * that restores exactly like the chosen point (default: the last). The chain is only read — never
 * modified — and every chunk is verified on its way into the new image. Chains with differential
 * points are refused, as the manual does.
 */
import { promises as fsp } from 'node:fs';
import { basename, resolve } from 'node:path';
import { RescueError } from '../errors.ts';
import { BackupChain, ENTRY_FLAGS, IMAGE_EXTENSION, ImageWriter, type IndexEntry } from '../image/index.ts';
import { completeImage } from './backup.ts';
import type { JobContext } from './job.ts';

export interface MergeRequest {
  /** Any file of the chain. */
  image: string;
  /** Folder for the merged image (must exist). */
  destination: string;
  /** File name of the merged image (default: the full's name + "-merged"). */
  name?: string;
  /** The last point to merge (default: the chain's last point). */
  point?: number | 'latest';
  password?: string;
  tool: string;
}

export interface MergeResult {
  firstFile: string;
  files: string[];
  merged: { sequence: number; type: string; file: string }[];
  usedBytes: number;
  storedBytes: number;
  seconds: number;
}

/** Bytes of chunks read and verified ahead of the writer. */
const IN_FLIGHT_BYTES = 16 * 1024 * 1024;

export async function runMerge(req: MergeRequest, ctx: JobContext): Promise<MergeResult> {
  const t0 = performance.now();
  const destination = resolve(req.destination);
  if (!(await fsp.stat(destination).catch(() => undefined))?.isDirectory()) {
    throw new RescueError(
      'E_DESTINATION_NOT_FOUND',
      `The destination folder ${destination} does not exist`,
      'Create it, or mount the disk or share that should hold the merged image.',
    );
  }
  const chain = await BackupChain.open(req.image, { password: req.password });
  try {
    const target = chain.select(req.point ?? 'latest');
    const merged = [target, ...chain.status(target).needs.map((id) => chain.point(id)!)].reverse();
    const diffs = merged.filter((p) => p.type === 'differential');
    if (diffs.length > 0) {
      throw new RescueError(
        'E_MERGE_DIFFERENTIAL',
        `The backup chain of ${basename(chain.named.path)} holds differential point ${diffs
          .map((p) => p.sequence)
          .join(', ')}: only a full backup and the incremental backups after it, in sequence, can be merged`,
        'A differential point already restores on its own with its full backup — restore it directly, or merge up to the last incremental before it (--point N).',
      );
    }
    if (merged.length < 2) {
      throw new RescueError(
        'E_NOTHING_TO_MERGE',
        `Point ${target.sequence} of ${basename(chain.named.path)} is the full backup itself: there is nothing to merge`,
        'Make an incremental backup first, or copy the full image if you want a second copy.',
      );
    }
    const m = target.reader.manifest;
    const full = merged[0];
    const name = req.name ?? `${basename(full.path, IMAGE_EXTENSION)}-merged`;
    const writer = await ImageWriter.create({
      dir: destination,
      name,
      compression: m.options.compression,
      // Encrypted exactly when the chain is (with its password).
      password: m.options.encrypted ? req.password : undefined,
      splitBytes: m.options.split ?? undefined,
      windowSize: m.options.window,
      tool: req.tool,
    });
    const total = target.reader.entries.reduce((n, e) => n + e.rawLength, 0);
    const sameKeying = !writer.codec.encrypted;
    const reader = target.reader;
    const note = `merged from points ${merged.map((p) => p.sequence).join(', ')} of ${basename(full.path)} (point ${target.sequence} made ${m.created})`;
    const finished = await completeImage(writer, ctx, t0, total, {
      phase: 'merge',
      message: `Merging points ${merged.map((p) => p.sequence).join(', ')} into ${name}${IMAGE_EXTENSION}`,
      copy: async (meter) => {
        const pending: { entry: IndexEntry; data: Promise<{ raw: Buffer; payload: Buffer }> }[] = [];
        const drain = async () => {
          const { entry, data } = pending.shift()!;
          const { raw, payload } = await data;
          const flags = entry.flags & (ENTRY_FLAGS.ZERO | ENTRY_FLAGS.STORED_RAW);
          // Verified above; an unencrypted payload is position-independent and is kept as it is
          // (a delta record's payload is a patch: its result is stored as a whole chunk).
          const chunk =
            sameKeying && !(entry.flags & ENTRY_FLAGS.DELTA)
              ? {
                  regionId: entry.regionId,
                  windowStart: entry.windowStart,
                  rawLength: raw.length,
                  flags,
                  sha256: entry.sha256,
                  payload,
                }
              : await writer.codec.encode(entry.regionId, entry.windowStart, raw, entry.sha256);
          await writer.append(chunk);
          meter.add(raw.length);
        };
        try {
          for (const entry of reader.entries) {
            ctx.signal.throwIfAborted();
            const data = reader.readChunkStored(entry);
            data.catch(() => {});
            pending.push({ entry, data });
            if (pending.length >= Math.max(4, Math.round(IN_FLIGHT_BYTES / reader.windowSize))) await drain();
          }
          while (pending.length > 0) await drain();
        } finally {
          await Promise.allSettled(pending.map((p) => p.data));
        }
      },
      manifest: () => ({
        tool: req.tool,
        kind: m.kind,
        name: m.name,
        comment: [...(m.comment ? `${m.comment} — ${note}` : note)].slice(0, 1024).join(''),
        options: { sectorBySector: m.options.sectorBySector },
        disks: m.disks,
      }),
    });
    return {
      firstFile: finished.firstFile,
      files: finished.files,
      merged: merged.map((p) => ({ sequence: p.sequence, type: p.type, file: p.path })),
      usedBytes: total,
      storedBytes: finished.storedBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await chain.close();
  }
}
