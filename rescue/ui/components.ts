/** Pieces the screens share: disk cards, error boxes, the steps bar, job progress. */
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { type ApiError, type ApiErrorBody, api, type DiskReport, type Job, type Progress } from './api.ts';
import { bytes, diskName, duration, rate } from './format.ts';
import { html } from './html.ts';

/** Where the data on a disk stands, in words: "ext4 'root' 1.2 GB used of 100 GB". */
export function describeContents(d: DiskReport): string[] {
  if (d.error) return [`cannot be read: ${d.error.message}`];
  if (d.table === 'none') {
    if (d.fs && d.fs.type !== 'unknown')
      return [
        `${d.fs.type}${d.fs.label ? ` “${d.fs.label}”` : ''} over the whole disk, ${bytes(d.fs.usedBytes)} used`,
      ];
    return ['empty — no partition table, nothing recognisable'];
  }
  if (d.partitions.length === 0) return [`an empty ${d.table.toUpperCase()} partition table`];
  return d.partitions.map(
    (p) =>
      `partition ${p.number}: ${bytes(p.size)} ${p.fs?.type && p.fs.type !== 'unknown' ? p.fs.type : 'unknown contents'}${p.fs?.label ? ` “${p.fs.label}”` : ''}${p.fs?.usedBytes !== undefined && p.fs.type !== 'unknown' ? `, ${bytes(p.fs.usedBytes)} used` : ''}${p.mounts?.length ? ` — mounted at ${p.mounts.join(', ')}` : ''}`,
  );
}

export function diskTitle(d: DiskReport): string {
  const who =
    [d.vendor, d.model].filter(Boolean).join(' ') || (d.kind === 'image' ? 'Disk image file' : 'Disk');
  return `${who} — ${bytes(d.size)}`;
}

export function DiskCard(props: { disk: DiskReport; children?: ComponentChildren }) {
  const d = props.disk;
  return html`<div class="disk">
    <div class="disk-title">${diskTitle(d)}</div>
    <div class="disk-facts">
      <span class="mono">${d.path}</span>${d.serial ? html` · serial <span class="mono">${d.serial}</span>` : null}${
        d.transport ? ` · ${d.transport.toUpperCase()}` : ''
      }${d.removable ? ' · removable' : ''}${d.table !== 'none' && d.table !== 'unknown' ? ` · ${d.table.toUpperCase()}` : ''}
    </div>
    <ul class="disk-contents">
      ${describeContents(d).map((line) => html`<li>${line}</li>`)}
    </ul>
    ${d.inUse ? html`<div class="warn">In use: ${(d.inUseReasons ?? []).join('; ')}</div>` : null}
    ${props.children}
  </div>`;
}

export function ErrorBox(props: { error: ApiErrorBody | ApiError | null; title?: string }) {
  const e = props.error;
  if (!e) return null;
  return html`<div class="error" role="alert">
    <div class="error-title">${props.title ?? 'That did not work'}</div>
    <p>${e.message} <span class="code">[${e.code}]</span></p>
    ${e.remedy ? html`<p><strong>What to do:</strong> ${e.remedy}</p>` : null}
  </div>`;
}

export function Steps(props: { steps: string[]; current: number }) {
  return html`<ol class="steps" aria-label="Steps">
    ${props.steps.map(
      (s, i) =>
        html`<li class=${i === props.current ? 'current' : i < props.current ? 'done' : ''} aria-current=${
          i === props.current ? 'step' : undefined
        }>${s}</li>`,
    )}
  </ol>`;
}

/** A heading that takes the keyboard focus when it appears (each wizard step). */
export function StepHeading(props: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  // Before the step is painted: a focus move after paint could snatch the focus from a control the
  // person (or a screen reader) already reached with Tab.
  useLayoutEffect(() => {
    ref.current?.focus();
  }, []);
  return html`<h2 tabindex="-1" ref=${ref}>${props.children}</h2>`;
}

function ProgressBar(props: { progress: Progress | null }) {
  const p = props.progress;
  const pct = p && p.bytesTotal > 0 ? Math.min(100, (100 * p.bytesDone) / p.bytesTotal) : 0;
  return html`<div class="progress">
    <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=${Math.round(pct)}>
      <div class="fill" style=${`width:${pct.toFixed(1)}%`}></div>
    </div>
    <div class="progress-facts">
      <span>${pct.toFixed(0)} %</span>
      ${p ? html`<span>${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}</span>` : null}
      ${p && p.rate > 0 ? html`<span>${rate(p.rate)}</span>` : null}
      ${p ? html`<span>time left: ${duration(p.etaSeconds)}</span>` : null}
    </div>
  </div>`;
}

/** Follows a job through its event stream; calls onEnd once when it has ended. */
export function useJob(id: string, onEnd?: (job: Job) => void): Job | null {
  const [job, setJob] = useState<Job | null>(null);
  useEffect(() => {
    let ended = false;
    const src = new EventSource(`/api/jobs/${id}/events`);
    const end = (j: Job) => {
      if (ended) return;
      ended = true;
      src.close();
      // The stream carries no log history: fetch the whole job once it has ended.
      api
        .get<{ job: Job }>(`/api/jobs/${id}`)
        .then((r) => {
          setJob(r.job);
          onEnd?.(r.job);
        })
        .catch(() => onEnd?.(j));
    };
    src.addEventListener('job', (ev) => {
      const j = JSON.parse((ev as MessageEvent).data) as Job;
      setJob((old) => ({
        ...j,
        log: j.log.length ? j.log : (old?.log ?? []),
        progress: j.progress ?? old?.progress ?? null,
      }));
      if (!['queued', 'running'].includes(j.state)) end(j);
    });
    src.addEventListener('progress', (ev) => {
      const p = JSON.parse((ev as MessageEvent).data) as Progress;
      setJob((old) => (old ? { ...old, progress: p } : old));
    });
    src.addEventListener('log', (ev) => {
      const line = JSON.parse((ev as MessageEvent).data);
      setJob((old) => (old ? { ...old, log: [...old.log, line] } : old));
    });
    return () => {
      ended = true;
      src.close();
    };
  }, [id]);
  return job;
}

/** "Finished: 24 MB written in 3 s" from a job's result, as far as it tells. */
function finishedText(j: Job): string {
  const r = j.result ?? {};
  const n = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : undefined);
  const written = n('bytesWritten') ?? n('storedBytes');
  const secs = n('seconds');
  if (written === undefined) return '';
  return `Finished: ${bytes(written)} ${n('bytesWritten') !== undefined ? 'written' : 'stored'}${secs !== undefined ? ` in ${duration(secs)}` : ''}`;
}

const PHASES: Record<string, string> = {
  analyse: 'Reading the source',
  backup: 'Backing up',
  restore: 'Restoring',
  clone: 'Cloning',
  verify: 'Verifying',
  check: 'Checking',
  merge: 'Merging',
  shrink: 'Shrinking filesystems',
  grow: 'Growing filesystems',
};

export function JobProgress(props: { job: Job; onCancel?: () => void }) {
  const j = props.job;
  const [asked, setAsked] = useState(false);
  const phase = j.progress?.phase ?? j.phase;
  // The error itself is shown in its own box below, with the remedy.
  const last = j.log.filter((l) => !(j.error && l.level === 'error')).slice(-6);
  // Failed and cancelled jobs say so in their heading and error box; a finished one only when it has figures.
  const ended = j.state === 'failed' || j.state === 'cancelled' || (j.state === 'done' && !finishedText(j));
  return html`<div class="job">
    ${
      ended
        ? null
        : html`<div class="job-state" aria-live="polite">
          ${
            j.state === 'queued'
              ? `Waiting: job ${j.waitingFor.join(', ')} uses the same disk`
              : j.state === 'running'
                ? (phase && PHASES[phase]) || 'Working'
                : finishedText(j)
          }
        </div>`
    }
    ${j.state === 'running' || j.state === 'queued' ? html`<${ProgressBar} progress=${j.progress} />` : null}
    <ul class="log">
      ${last.map((l) => html`<li class=${l.level}>${l.message}</li>`)}
    </ul>
    ${
      props.onCancel && (j.state === 'running' || j.state === 'queued')
        ? asked
          ? html`<div class="row">
            <span>Stop now? Whatever was written so far stays on the target and is not usable.</span>
            <button class="danger" onClick=${props.onCancel}>Yes, cancel</button>
            <button onClick=${() => setAsked(false)}>No, go on</button>
          </div>`
          : html`<button class="secondary" onClick=${() => setAsked(true)}>Cancel…</button>`
        : null
    }
  </div>`;
}

/** The typed confirmation: the person types the disk's name before anything is overwritten. */
export function TypedConfirm(props: {
  disk: DiskReport | null;
  target: string;
  what: string;
  onConfirm: (word: string) => void;
  busy?: boolean;
}) {
  const word = diskName(props.target);
  const [typed, setTyped] = useState('');
  const ok = typed.trim() === word;
  return html`<form
    class="confirm"
    onSubmit=${(e: Event) => {
      e.preventDefault();
      if (ok) props.onConfirm(word);
    }}
  >
    <div class="danger-box">
      <p><strong>Everything on this disk will be overwritten:</strong> ${props.what}</p>
      ${props.disk ? html`<${DiskCard} disk=${props.disk} />` : html`<p class="mono">${props.target} (a new image file)</p>`}
    </div>
    <!-- Uncontrolled: a re-render while the person types must never put back an older value. -->
    <label for="confirm-word">Type <strong class="mono">${word}</strong> to confirm</label>
    <input id="confirm-word" autocomplete="off" spellcheck="false" onInput=${(e: Event) => setTyped((e.target as HTMLInputElement).value)} />
    <div class="row">
      <button type="submit" class="danger" disabled=${!ok || props.busy}>Overwrite ${word}</button>
    </div>
  </form>`;
}
