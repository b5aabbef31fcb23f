/**
 * How a job's events reach a person (or a script) on the command line: a redrawn bar with MB/s
 * and ETA on a terminal, a plain line every few percent otherwise, one JSON object per line with
 * --json. Always on stderr: stdout carries only results (for a backup: the image's path).
 */
import type { JobContext, JobEvent } from '../engine/jobs/job.ts';
import { formatBytes } from './output.ts';

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`
    : `${m}:${String(sec).padStart(2, '0')}`;
}

export interface Reporter extends JobContext {
  /** Ends the bar's line. */
  close(): void;
}

export function createReporter(opts: {
  json: boolean;
  signal: AbortSignal;
  stream?: NodeJS.WriteStream;
}): Reporter {
  const out = opts.stream ?? process.stderr;
  const tty = !opts.json && !!out.isTTY;
  let barShown = false;
  let lastPlainPct = -1;
  let lastPlainTime = 0;
  const clearBar = () => {
    if (barShown) {
      out.write('\r\x1b[2K');
      barShown = false;
    }
  };
  const emit = (e: JobEvent) => {
    if (opts.json) {
      out.write(`${JSON.stringify(e)}\n`);
      return;
    }
    if (e.type === 'phase') {
      clearBar();
      out.write(`${e.message}\n`);
      return;
    }
    if (e.type === 'log') {
      clearBar();
      out.write(`${e.level === 'info' ? '' : `${e.level}: `}${e.message}\n`);
      return;
    }
    const pct = e.bytesTotal > 0 ? Math.min(100, (100 * e.bytesDone) / e.bytesTotal) : 100;
    const rate = `${formatBytes(e.rate)}/s`;
    const eta = e.etaSeconds !== undefined ? `ETA ${formatDuration(e.etaSeconds)}` : '';
    if (tty) {
      const width = Math.max(10, Math.min(40, (out.columns ?? 80) - 60));
      const filled = Math.round((pct / 100) * width);
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
      out.write(
        `\r\x1b[2K${bar} ${pct.toFixed(1).padStart(5)}%  ${formatBytes(e.bytesDone)} of ${formatBytes(e.bytesTotal)}  ${rate}  ${eta}`,
      );
      barShown = true;
      return;
    }
    const now = Date.now();
    if (pct >= 100 || Math.floor(pct / 5) > Math.floor(lastPlainPct / 5) || now - lastPlainTime > 10_000) {
      if (pct >= 100 && lastPlainPct >= 100) return;
      lastPlainPct = pct;
      lastPlainTime = now;
      out.write(
        `${e.phase}: ${pct.toFixed(0)}% (${formatBytes(e.bytesDone)} of ${formatBytes(e.bytesTotal)}), ${rate}${eta ? `, ${eta}` : ''}\n`,
      );
    }
  };
  return {
    signal: opts.signal,
    emit,
    close: () => {
      if (barShown) out.write('\n');
      barShown = false;
    },
  };
}
