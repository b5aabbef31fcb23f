/**
 * What a client may ask the server to run: the JSON bodies of POST /api/jobs, checked field by
 * field, turned into engine jobs with the disks they read and write. Jobs that overwrite a disk
 * (restore, clone) need `confirm` to be the target's name as the UI asks the person to type it —
 * the same typed confirmation as the CLI's, so a script or a stray click cannot overwrite a disk.
 */
import { basename } from 'node:path';
import { RescueError } from '../engine/errors.ts';
import { checkChain } from '../engine/image/index.ts';
import { runBackup } from '../engine/jobs/backup.ts';
import { runClone } from '../engine/jobs/clone.ts';
import { runMerge } from '../engine/jobs/merge.ts';
import { runPointBackup } from '../engine/jobs/point-backup.ts';
import { runRestore } from '../engine/jobs/restore.ts';
import type { EditOptions } from '../engine/resize/layout.ts';
import { badRequest, type JobDefinition } from './jobs.ts';

type Body = Record<string, unknown>;

class Fields {
  private readonly body: Body;
  private readonly seen = new Set<string>(['kind', 'confirm']);

  constructor(body: Body) {
    this.body = body;
  }

  private take(name: string): unknown {
    this.seen.add(name);
    return this.body[name];
  }

  /** A field checked by the caller. */
  raw(name: string): unknown {
    return this.take(name);
  }

  string(name: string): string {
    const v = this.take(name);
    if (typeof v !== 'string' || v === '') throw badRequest(`"${name}" must be a non-empty string`);
    return v;
  }

  optString(name: string): string | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw badRequest(`"${name}" must be a string`);
    return v;
  }

  optBool(name: string): boolean | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw badRequest(`"${name}" must be true or false`);
    return v;
  }

  optInt(name: string, min = 0): number | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return undefined;
    if (!Number.isSafeInteger(v) || (v as number) < min)
      throw badRequest(`"${name}" must be a whole number ≥ ${min}`);
    return v as number;
  }

  oneOf<T extends string>(name: string, values: readonly T[], fallback?: T): T {
    const v = this.take(name) ?? fallback;
    if (typeof v !== 'string' || !values.includes(v as T))
      throw badRequest(`"${name}" must be one of ${values.join(', ')}`);
    return v as T;
  }

  point(name: string): number | 'latest' | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return undefined;
    if (v === 'latest') return v;
    if (Number.isSafeInteger(v) && (v as number) >= 1) return v as number;
    throw badRequest(`"${name}" must be a point number or "latest"`);
  }

  edit(name: string): EditOptions | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) throw badRequest(`"${name}" must be an object`);
    const e = v as Body;
    const mode = e.mode ?? 'copy';
    if (mode !== 'copy' && mode !== 'fill' && mode !== 'shrink' && mode !== 'layout')
      throw badRequest(`"${name}.mode" must be copy, fill, shrink or layout`);
    for (const k of Object.keys(e))
      if (!['mode', 'layout', 'align', 'newIds', 'scratch'].includes(k))
        throw badRequest(`unknown field "${name}.${k}"`);
    if (mode === 'layout' && typeof e.layout !== 'string')
      throw badRequest(`"${name}.layout" is needed for the layout mode`);
    for (const k of ['align', 'newIds'] as const)
      if (e[k] !== undefined && typeof e[k] !== 'boolean')
        throw badRequest(`"${name}.${k}" must be true or false`);
    if (e.scratch !== undefined && typeof e.scratch !== 'string')
      throw badRequest(`"${name}.scratch" must be a path`);
    return { ...(e as Partial<EditOptions>), mode } as EditOptions;
  }

  /** Refuses fields nobody read: a typo must not silently drop an option. */
  done(): void {
    const extra = Object.keys(this.body).filter((k) => !this.seen.has(k));
    if (extra.length > 0)
      throw badRequest(
        `unknown field${extra.length > 1 ? 's' : ''} ${extra.map((k) => `"${k}"`).join(', ')}`,
      );
  }
}

/** The word a person types to confirm that `target` will be overwritten: its name. */
export function confirmWord(target: string): string {
  return basename(target);
}

function requireConfirmation(body: Body, target: string): void {
  const word = confirmWord(target);
  if (body.confirm !== word) {
    throw new RescueError(
      'E_CONFIRMATION_REQUIRED',
      `Overwriting ${target} needs its name typed as confirmation ("${word}")`,
      'Type the name of the disk that will be overwritten, exactly as shown, to confirm.',
      { expected: word },
    );
  }
}

/** A job definition for a request body; throws E_BAD_REQUEST / E_CONFIRMATION_REQUIRED. */
export function jobFromRequest(body: unknown, tool: string): JobDefinition {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('the body must be a JSON object');
  const b = body as Body;
  const f = new Fields(b);
  const kind = f.oneOf('kind', [
    'backup',
    'incremental',
    'differential',
    'restore',
    'clone',
    'check',
    'merge',
  ] as const);
  switch (kind) {
    case 'backup': {
      const type = f.oneOf('type', ['disk', 'partition', 'system'] as const);
      const sources = sourcesOf(f.raw('sources'), type);
      const req = {
        kind: type,
        sources,
        destination: f.string('destination'),
        name: f.optString('name'),
        folder: f.optBool('folder'),
        compression: f.oneOf('compression', ['none', 'normal', 'high'] as const, 'normal'),
        password: f.optString('password'),
        splitBytes: f.optInt('splitBytes', 1),
        sectorBySector: f.optBool('sectorBySector'),
        comment: f.optString('comment'),
        check: f.optBool('check'),
        tool,
      };
      f.done();
      return {
        kind,
        summary: `Back up ${sources.map((s) => s.path + (s.partitions ? ` partition ${s.partitions.join(', ')}` : '')).join(' + ')} (${type}) to ${req.destination}`,
        claims: [...sources.map((s) => ({ path: s.path, mode: 'read' as const }))],
        run: (ctx) => runBackup(req, ctx),
      };
    }
    case 'incremental':
    case 'differential': {
      const req = {
        type: kind,
        image: f.string('image'),
        password: f.optString('password'),
        comment: f.optString('comment'),
        check: f.optBool('check'),
        force: f.optBool('force'),
        tool,
      };
      f.done();
      return {
        kind,
        summary: `${kind === 'incremental' ? 'Incremental' : 'Differential'} backup of the chain of ${req.image}`,
        claims: [{ path: req.image, mode: 'read' }],
        run: (ctx) => runPointBackup(req, ctx),
      };
    }
    case 'restore': {
      const req = {
        image: f.string('image'),
        point: f.point('point'),
        password: f.optString('password'),
        target: f.string('target'),
        targetPartition: f.optInt('targetPartition', 1),
        toFree: f.optBool('toFree'),
        disk: f.optInt('disk'),
        partition: f.optInt('partition', 1),
        sectorBySector: f.optBool('sectorBySector'),
        tableKind: b.tableKind === undefined ? undefined : f.oneOf('tableKind', ['mbr', 'gpt'] as const),
        edit: f.edit('edit'),
      };
      f.done();
      requireConfirmation(b, req.target);
      return {
        kind,
        summary: `Restore ${req.image}${req.point ? ` (point ${req.point})` : ''} to ${req.target}${req.targetPartition ? ` partition ${req.targetPartition}` : ''}`,
        claims: [
          { path: req.image, mode: 'read' },
          { path: req.target, mode: 'write' },
        ],
        run: (ctx) => runRestore(req, ctx),
      };
    }
    case 'clone': {
      const req = {
        kind: f.oneOf('type', ['disk', 'partition', 'system'] as const),
        source: f.string('source'),
        sourcePartition: f.optInt('sourcePartition', 1),
        target: f.string('target'),
        targetPartition: f.optInt('targetPartition', 1),
        toFree: f.optBool('toFree'),
        sectorBySector: f.optBool('sectorBySector'),
        verify: f.optBool('verify'),
        edit: f.edit('edit'),
        tool,
      };
      f.done();
      requireConfirmation(b, req.target);
      return {
        kind,
        summary: `Clone ${req.source}${req.sourcePartition ? ` partition ${req.sourcePartition}` : ''} (${req.kind}) to ${req.target}`,
        claims: [
          { path: req.source, mode: 'read' },
          { path: req.target, mode: 'write' },
        ],
        run: (ctx) => runClone(req, ctx),
      };
    }
    case 'check': {
      const image = f.string('image');
      const point = f.point('point');
      const password = f.optString('password');
      f.done();
      return {
        kind,
        summary: `Check ${image}${point ? ` (point ${point})` : ''}`,
        claims: [{ path: image, mode: 'read' }],
        run: async (ctx) => {
          const report = await checkChain(image, {
            password,
            point,
            signal: ctx.signal,
            onProgress: progressOf(ctx, 'check'),
          });
          return report;
        },
      };
    }
    case 'merge': {
      const req = {
        image: f.string('image'),
        destination: f.string('destination'),
        name: f.optString('name'),
        point: f.point('point'),
        password: f.optString('password'),
        tool,
      };
      f.done();
      return {
        kind,
        summary: `Merge the chain of ${req.image} into ${req.destination}`,
        claims: [{ path: req.image, mode: 'read' }],
        run: (ctx) => runMerge(req, ctx),
      };
    }
  }
}

function sourcesOf(v: unknown, type: string): { path: string; partitions?: number[] }[] {
  if (!Array.isArray(v) || v.length === 0)
    throw badRequest('"sources" must be a list of {path, partitions?}');
  return v.map((s, i) => {
    if (
      typeof s !== 'object' ||
      s === null ||
      typeof (s as Body).path !== 'string' ||
      (s as Body).path === ''
    )
      throw badRequest(`"sources[${i}].path" must be a path`);
    const parts = (s as Body).partitions;
    if (
      parts !== undefined &&
      (!Array.isArray(parts) || !parts.every((n) => Number.isSafeInteger(n) && n >= 1))
    )
      throw badRequest(`"sources[${i}].partitions" must be a list of partition numbers`);
    if (type === 'partition' && parts === undefined)
      throw badRequest(`"sources[${i}].partitions" is needed for a partition backup`);
    for (const k of Object.keys(s as Body))
      if (k !== 'path' && k !== 'partitions') throw badRequest(`unknown field "sources[${i}].${k}"`);
    return { path: (s as Body).path as string, partitions: parts as number[] | undefined };
  });
}

/** checkChain reports bytes; the job wants progress events like the other jobs'. */
function progressOf(ctx: import('../engine/jobs/job.ts').JobContext, phase: string) {
  const t0 = performance.now();
  let last = 0;
  return (done: number, total: number) => {
    const now = performance.now();
    if (now - last < 250 && done < total) return;
    last = now;
    const rate = done / Math.max(0.001, (now - t0) / 1000);
    ctx.emit({
      type: 'progress',
      phase,
      bytesDone: done,
      bytesTotal: total,
      rate,
      etaSeconds: rate > 0 ? (total - done) / rate : undefined,
    });
  };
}
