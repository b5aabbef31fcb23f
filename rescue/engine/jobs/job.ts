/**
 * What every job (backup, restore, clone, check, merge) shares: cancellation through an
 * AbortSignal, progress events with rate and ETA, structured log lines. The CLI, the web UI and
 * PXE-driven clients all consume the same events.
 */

export type JobEvent =
  | { type: 'phase'; phase: string; message: string }
  | {
      type: 'progress';
      phase: string;
      bytesDone: number;
      bytesTotal: number;
      /** Bytes per second, smoothed. */
      rate: number;
      etaSeconds: number | undefined;
    }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string };

export interface JobContext {
  signal: AbortSignal;
  emit(event: JobEvent): void;
}

/**
 * Turns byte counts into progress events at most every `intervalMs`, with a rate smoothed over the
 * last few seconds so that one slow chunk does not make the ETA jump.
 */
export class ProgressMeter {
  private done = 0;
  private lastEmit = 0;
  private rate = 0;
  private lastSampleTime: number;
  private lastSampleBytes = 0;
  private readonly started: number;
  private readonly ctx: JobContext;
  private readonly phase: string;
  private readonly total: number;
  private readonly intervalMs: number;

  constructor(ctx: JobContext, phase: string, total: number, intervalMs = 250) {
    this.ctx = ctx;
    this.phase = phase;
    this.total = total;
    this.intervalMs = intervalMs;
    this.started = performance.now();
    this.lastSampleTime = this.started;
  }

  add(bytes: number): void {
    this.done += bytes;
    const now = performance.now();
    if (now - this.lastEmit >= this.intervalMs) this.emit(now);
  }

  finish(): void {
    this.emit(performance.now(), true);
  }

  get bytesDone(): number {
    return this.done;
  }

  /** Average over the whole phase, bytes per second. */
  get averageRate(): number {
    const s = (performance.now() - this.started) / 1000;
    return s > 0 ? this.done / s : 0;
  }

  private emit(now: number, final = false): void {
    const dt = (now - this.lastSampleTime) / 1000;
    if (dt > 0) {
      const instant = (this.done - this.lastSampleBytes) / dt;
      // Exponential smoothing with a ~3 s time constant.
      const alpha = Math.min(1, dt / 3);
      this.rate = this.rate === 0 ? instant : this.rate + alpha * (instant - this.rate);
      this.lastSampleTime = now;
      this.lastSampleBytes = this.done;
    }
    this.lastEmit = now;
    const remaining = Math.max(0, this.total - this.done);
    const rate = final ? this.averageRate : this.rate;
    this.ctx.emit({
      type: 'progress',
      phase: this.phase,
      bytesDone: this.done,
      bytesTotal: this.total,
      rate,
      etaSeconds: rate > 0 ? remaining / rate : undefined,
    });
  }
}
