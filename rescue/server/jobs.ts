/**
 * The server's job queue: every backup, restore, clone, check and merge started over the API runs
 * here, one engine job each, with its progress and log kept for the UI and streamed to it.
 *
 * A job names the disks (or image files) it reads and writes. It waits while a running or earlier
 * queued job writes one of them, or reads one it writes: two writers never share a disk, and
 * nothing reads a disk while it is being overwritten. Finished jobs are appended to a history file
 * (the log view, manual 7.7) when a state folder is given.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { isRescueError, RescueError } from '../engine/errors.ts';
import { isUrl } from '../engine/image/storage.ts';
import type { JobContext, JobEvent } from '../engine/jobs/job.ts';

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

/** A disk or file a job touches, and how. */
export interface Claim {
  path: string;
  mode: 'read' | 'write';
}

export interface JobError {
  code: string;
  message: string;
  remedy: string;
}

export interface LogLine {
  time: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface Progress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  rate: number;
  etaSeconds: number | null;
}

/** What the API shows of a job. */
export interface JobView {
  id: string;
  kind: string;
  summary: string;
  state: JobState;
  created: string;
  started: string | null;
  finished: string | null;
  /** Ids of the jobs it waits for (queued only). */
  waitingFor: string[];
  phase: string | null;
  progress: Progress | null;
  log: LogLine[];
  result: unknown;
  error: JobError | null;
  /** What it reads and writes, as given. */
  claims: Claim[];
}

export type JobUpdate =
  | { type: 'job'; job: JobView }
  | { type: 'progress'; id: string; progress: Progress }
  | { type: 'log'; id: string; line: LogLine };

export interface JobDefinition {
  kind: string;
  summary: string;
  claims: Claim[];
  run: (ctx: JobContext) => Promise<unknown>;
}

const MAX_LOG_LINES = 500;
const MAX_FINISHED = 200;
const HISTORY_FILE = 'jobs.jsonl';

interface Job {
  view: JobView;
  keys: { key: string; mode: Claim['mode'] }[];
  def: JobDefinition;
  abort: AbortController;
  done: Promise<void>;
  resolveDone: () => void;
}

/**
 * The same disk under any name: a partition device stands for its whole disk (writing sdb1 and
 * reading sdb conflict), symlinks (/dev/disk/by-id/…) and relative paths are resolved.
 */
export async function claimKey(path: string): Promise<string> {
  if (isUrl(path)) return path; // an image read from a PXE server
  const real = await fsp.realpath(path).catch(() => resolve(path));
  const st = await fsp.stat(real).catch(() => undefined);
  if (!st?.isBlockDevice()) return real;
  // Linux dev_t: major in bits 8-19, minor in bits 0-7 and 20-31.
  const major = (st.rdev >>> 8) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >>> 12) & 0xfff00);
  const sys = `/sys/dev/block/${major}:${minor}`;
  const isPartition = await fsp
    .access(join(sys, 'partition'))
    .then(() => true)
    .catch(() => false);
  if (!isPartition) return real;
  const parent = basename(dirname(await fsp.realpath(sys)));
  return `/dev/${parent}`;
}

function conflicts(a: Job['keys'], b: Job['keys']): boolean {
  return a.some((x) => b.some((y) => x.key === y.key && (x.mode === 'write' || y.mode === 'write')));
}

function errorOf(e: unknown): JobError {
  if (isRescueError(e)) return { code: e.code, message: e.message, remedy: e.remedy };
  const msg = e instanceof Error ? e.message : String(e);
  return {
    code: 'E_INTERNAL',
    message: `internal error: ${msg}`,
    remedy: 'This is a bug: save the job log and report it.',
  };
}

function isCancel(e: unknown, signal: AbortSignal): boolean {
  if (isRescueError(e) && e.code === 'E_CANCELLED') return true;
  return signal.aborted && (e as Error | undefined)?.name === 'AbortError';
}

export class JobManager {
  private readonly jobs = new Map<string, Job>();
  private readonly listeners = new Set<(u: JobUpdate) => void>();
  private readonly stateDir: string | undefined;
  private seq = 0;

  constructor(opts: { stateDir?: string } = {}) {
    this.stateDir = opts.stateDir;
  }

  /** Queues a job; it starts as soon as nothing it touches is being written (or read, for its writes). */
  async submit(def: JobDefinition): Promise<JobView> {
    const keys = await Promise.all(
      def.claims.map(async (c) => ({ key: await claimKey(c.path), mode: c.mode })),
    );
    const id = `${Date.now().toString(36)}-${(++this.seq).toString(36)}`;
    let resolveDone: () => void = () => {};
    const done = new Promise<void>((r) => {
      resolveDone = r;
    });
    const job: Job = {
      view: {
        id,
        kind: def.kind,
        summary: def.summary,
        state: 'queued',
        created: new Date().toISOString(),
        started: null,
        finished: null,
        waitingFor: [],
        phase: null,
        progress: null,
        log: [],
        result: null,
        error: null,
        claims: def.claims,
      },
      keys,
      def,
      abort: new AbortController(),
      done,
      resolveDone,
    };
    this.jobs.set(id, job);
    this.prune();
    this.schedule();
    this.publish({ type: 'job', job: this.snapshot(job) });
    return this.snapshot(job);
  }

  get(id: string): JobView | undefined {
    const j = this.jobs.get(id);
    return j && this.snapshot(j);
  }

  list(): JobView[] {
    return [...this.jobs.values()].map((j) => this.snapshot(j, false)).reverse();
  }

  /** Resolves when the job has ended (any state but queued/running). */
  async settled(id: string): Promise<JobView | undefined> {
    const j = this.jobs.get(id);
    if (!j) return undefined;
    await j.done;
    return this.snapshot(j);
  }

  /** Cancels a queued job at once, a running one through its AbortSignal (it cleans up first). */
  cancel(id: string): JobView | undefined {
    const j = this.jobs.get(id);
    if (!j) return undefined;
    if (j.view.state === 'queued') {
      this.finish(j, 'cancelled', null, null);
    } else if (j.view.state === 'running' && !j.abort.signal.aborted) {
      this.addLog(j, 'warn', 'Cancel requested: stopping after the current step and cleaning up…');
      j.abort.abort();
    }
    return this.snapshot(j);
  }

  subscribe(fn: (u: JobUpdate) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Finished jobs of earlier runs (and this one), newest first, from the history file. */
  async history(): Promise<JobView[]> {
    if (!this.stateDir) return this.list().filter((j) => j.finished !== null);
    const text = await fsp.readFile(join(this.stateDir, HISTORY_FILE), 'utf8').catch(() => '');
    const out: JobView[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as JobView);
      } catch {
        // A torn last line (power loss while appending) is skipped, not fatal.
      }
    }
    return out.reverse();
  }

  /** Cancels every running job and waits for them (server shutdown). */
  async close(): Promise<void> {
    const running = [...this.jobs.values()].filter(
      (j) => j.view.state === 'running' || j.view.state === 'queued',
    );
    for (const j of running) this.cancel(j.view.id);
    await Promise.all(running.map((j) => j.done));
  }

  private snapshot(j: Job, withLog = true): JobView {
    return { ...j.view, log: withLog ? [...j.view.log] : [], waitingFor: [...j.view.waitingFor] };
  }

  private publish(u: JobUpdate): void {
    for (const fn of this.listeners) {
      try {
        fn(u);
      } catch {
        // A listener (an SSE stream whose client went away) must not break the job.
      }
    }
  }

  private addLog(j: Job, level: LogLine['level'], message: string): void {
    const line = { time: new Date().toISOString(), level, message };
    j.view.log.push(line);
    if (j.view.log.length > MAX_LOG_LINES) j.view.log.splice(0, j.view.log.length - MAX_LOG_LINES);
    this.publish({ type: 'log', id: j.view.id, line });
  }

  /** Starts every queued job that conflicts with no running job and no earlier queued one. */
  private schedule(): void {
    // Insertion order is submission order: an earlier queued job is never overtaken by a later
    // one that needs the same disk.
    const all = [...this.jobs.values()];
    for (const [i, j] of all.entries()) {
      if (j.view.state !== 'queued') continue;
      const blockers = all.filter(
        (o, k) =>
          k !== i &&
          (o.view.state === 'running' || (o.view.state === 'queued' && k < i)) &&
          conflicts(o.keys, j.keys),
      );
      const waiting = blockers.map((b) => b.view.id);
      if (waiting.length > 0) {
        if (waiting.join() !== j.view.waitingFor.join()) {
          j.view.waitingFor = waiting;
          this.addLog(j, 'info', `Waiting for job ${waiting.join(', ')}, which uses the same disk`);
          this.publish({ type: 'job', job: this.snapshot(j) });
        }
        continue;
      }
      this.start(j);
    }
  }

  private start(j: Job): void {
    j.view.state = 'running';
    j.view.waitingFor = [];
    j.view.started = new Date().toISOString();
    this.publish({ type: 'job', job: this.snapshot(j) });
    const ctx: JobContext = {
      signal: j.abort.signal,
      emit: (ev: JobEvent) => this.onEvent(j, ev),
    };
    // Always asynchronous, so submit() returns before a job can finish.
    queueMicrotask(() => {
      j.def.run(ctx).then(
        (result) => this.finish(j, 'done', result, null),
        (e) =>
          isCancel(e, j.abort.signal)
            ? this.finish(j, 'cancelled', null, null)
            : this.finish(j, 'failed', null, errorOf(e)),
      );
    });
  }

  private onEvent(j: Job, ev: JobEvent): void {
    if (ev.type === 'phase') {
      j.view.phase = ev.phase;
      this.addLog(j, 'info', ev.message);
      this.publish({ type: 'job', job: this.snapshot(j, false) });
    } else if (ev.type === 'progress') {
      j.view.progress = {
        phase: ev.phase,
        bytesDone: ev.bytesDone,
        bytesTotal: ev.bytesTotal,
        rate: ev.rate,
        etaSeconds: ev.etaSeconds ?? null,
      };
      this.publish({ type: 'progress', id: j.view.id, progress: j.view.progress });
    } else {
      this.addLog(j, ev.level, ev.message);
    }
  }

  private finish(j: Job, state: JobState, result: unknown, error: JobError | null): void {
    j.view.state = state;
    j.view.result = result ?? null;
    j.view.error = error;
    j.view.waitingFor = [];
    j.view.finished = new Date().toISOString();
    if (state === 'done') this.addLog(j, 'info', 'Finished');
    else if (state === 'cancelled') this.addLog(j, 'warn', 'Cancelled');
    else if (error) this.addLog(j, 'error', `${error.message} [${error.code}] — ${error.remedy}`);
    this.publish({ type: 'job', job: this.snapshot(j) });
    j.resolveDone();
    void this.record(j);
    this.schedule();
  }

  private async record(j: Job): Promise<void> {
    if (!this.stateDir) return;
    try {
      await fsp.mkdir(this.stateDir, { recursive: true });
      await fsp.appendFile(join(this.stateDir, HISTORY_FILE), `${JSON.stringify(this.snapshot(j))}\n`);
    } catch (e) {
      this.addLog(j, 'warn', `The job history could not be saved: ${(e as Error).message}`);
    }
  }

  /** Keeps memory bounded on a server that runs for weeks: only the newest finished jobs stay. */
  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.view.finished !== null);
    for (const j of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED)))
      this.jobs.delete(j.view.id);
  }
}

/** For API handlers: a RescueError for a request that cannot be a job. */
export function badRequest(message: string, remedy = 'Correct the request and send it again.'): RescueError {
  return new RescueError('E_BAD_REQUEST', message, remedy);
}
