/**
 * Tools (manual 7.2, 7.4, 7.7, 7.1): check an image, merge a chain, the log of every job (filtered
 * by date and result), and the saved network locations.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, type ImageChain, type Job } from '../api.ts';
import { ErrorBox, StepHeading } from '../components.ts';
import { when } from '../format.ts';
import { html, inputValue as value } from '../html.ts';
import { useImages } from './home.ts';
import { type LocationView, NetworkLocations, type OpenedLocation, SpaceNote } from './locations.ts';
import { RunningStep } from './wizard.ts';

function ImageJob(props: { kind: 'check' | 'merge' }) {
  const [folder, setFolder] = useState('');
  const [asked, setAsked] = useState<string | undefined>(undefined);
  const { chains } = useImages(asked);
  const [chain, setChain] = useState<ImageChain | null>(null);
  const [password, setPassword] = useState('');
  const [destination, setDestination] = useState('');
  const [error, setError] = useState<ApiError | null>(null);
  const [jobId, setJobId] = useState<string | null>(null);
  if (jobId)
    return html`<${RunningStep} id=${jobId} noun=${props.kind === 'check' ? 'Check' : 'Merge'}
      doneText=${props.kind === 'check' ? 'The check is complete.' : 'The merged image is complete.'}>
      <${CheckReport} id=${jobId} />
    </${RunningStep}>`;
  const encrypted = chain?.points.some((p) => p.encrypted) ?? false;
  const start = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      const latest = chain!.points[chain!.points.length - 1].path;
      const r = await api.post<{ job: Job }>('/api/jobs', {
        kind: props.kind,
        image: latest,
        password: encrypted ? password : undefined,
        ...(props.kind === 'merge' ? { destination: destination.trim() } : {}),
      });
      setJobId(r.job.id);
    } catch (err) {
      setError(err as ApiError);
    }
  };
  return html`<form onSubmit=${start}>
    ${
      chains === null
        ? html`<p>Looking for backups…</p>`
        : chains.length === 0
          ? html`<p>No backups found in the known folders.</p>`
          : html`<fieldset class="choices"><legend class="sr-only">Backups</legend>${chains.map(
              (c) => html`<label class="choice">
              <input type="radio" name=${`${props.kind}-chain`} checked=${chain?.chainId === c.chainId} onChange=${() => setChain(c)} />
              <span><strong class="mono">${c.points[0].path.split('/').pop()}</strong> in <span class="mono">${c.folder}</span><br />${c.points.length} point(s), the last ${when(c.points[c.points.length - 1].created)}${c.points[0].encrypted ? ' · encrypted' : ''}</span>
            </label>`,
            )}</fieldset>`
    }
    <div class="row">
      <label for=${`${props.kind}-folder`}>Look in another folder</label>
      <input id=${`${props.kind}-folder`} class="grow" onInput=${(e: Event) => setFolder(value(e))} />
      <button type="button" class="secondary" onClick=${() => setAsked(folder.trim() || undefined)}>Search</button>
    </div>
    ${
      encrypted
        ? html`<label for=${`${props.kind}-password`}>Password</label>
        <input id=${`${props.kind}-password`} type="password" autocomplete="off" onInput=${(e: Event) => setPassword(value(e))} />`
        : null
    }
    ${
      props.kind === 'merge'
        ? html`<label for="merge-destination">Folder for the merged image</label>
        <input id="merge-destination" class="wide" value=${destination} onInput=${(e: Event) => setDestination(value(e))} />
        <p class="hint">A full backup and the incremental backups after it become one new full backup. The originals are not changed.</p>`
        : null
    }
    <${ErrorBox} error=${error} />
    <div class="row">
      <button type="submit" class="primary" disabled=${!chain || (encrypted && !password) || (props.kind === 'merge' && !destination.trim())}>
        ${props.kind === 'check' ? 'Check the backup' : 'Merge'}
      </button>
    </div>
  </form>`;
}

/** The outcome of a check job: each point intact or not, usable or why not. */
function CheckReport(props: { id: string }) {
  const [job, setJob] = useState<Job | null>(null);
  useEffect(() => {
    const t = setInterval(() => {
      api.get<{ job: Job }>(`/api/jobs/${props.id}`).then((r) => {
        if (r.job.state !== 'queued' && r.job.state !== 'running') {
          setJob(r.job);
          clearInterval(t);
        }
      });
    }, 500);
    return () => clearInterval(t);
  }, [props.id]);
  const report = job?.result as
    | {
        ok: boolean;
        points: {
          sequence?: number;
          type: string;
          ok: boolean;
          usable?: boolean;
          why?: string;
          problems: { code: string; message: string }[];
        }[];
      }
    | null
    | undefined;
  if (!report || job?.kind !== 'check') return null;
  return html`<div class=${report.ok ? 'ok' : 'error'}>
    <p><strong>${report.ok ? 'The backup is intact: every point can be restored.' : 'The backup is damaged.'}</strong></p>
    <ul class="plain">${report.points.map(
      (
        p,
      ) => html`<li>Point ${p.sequence ?? ''} (${p.type}): ${p.ok ? 'intact' : 'DAMAGED'}${p.usable === false ? ` — cannot be restored: ${p.why}` : ''}
        ${p.problems.length ? html`<ul>${p.problems.slice(0, 5).map((x) => html`<li>${x.message} [${x.code}]</li>`)}</ul>` : null}</li>`,
    )}</ul>
  </div>`;
}

function Logs() {
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [result, setResult] = useState('all');
  const [from, setFrom] = useState('');
  useEffect(() => {
    api.get<{ jobs: Job[] }>('/api/jobs/history').then((r) => setJobs(r.jobs));
  }, []);
  const shown = (jobs ?? []).filter(
    (j) => (result === 'all' || j.state === result) && (!from || (j.finished ?? j.created) >= from),
  );
  return html`<div>
    <div class="row">
      <label for="log-result">Result</label>
      <select id="log-result" onChange=${(e: Event) => setResult((e.target as HTMLSelectElement).value)}>
        ${[
          ['all', 'All'],
          ['done', 'Succeeded'],
          ['failed', 'Failed'],
          ['cancelled', 'Cancelled'],
        ].map(([v, t]) => html`<option value=${v} selected=${result === v}>${t}</option>`)}
      </select>
      <label for="log-from">Since</label>
      <input id="log-from" type="date" value=${from} onInput=${(e: Event) => setFrom(value(e))} />
    </div>
    ${
      jobs === null
        ? html`<p>Loading…</p>`
        : shown.length === 0
          ? html`<p>No jobs${result !== 'all' || from ? ' match' : ' yet'}.</p>`
          : html`<table class="logs">
            <thead><tr><th>Finished</th><th>Job</th><th>Result</th></tr></thead>
            <tbody>${shown.map(
              (j) => html`<tr>
                <td>${j.finished ? when(j.finished) : '—'}</td>
                <td><a href=${`#/jobs/${j.id}`}>${j.summary}</a></td>
                <td class=${`state-${j.state}`}>${j.state === 'done' ? 'succeeded' : j.state}${j.error ? ` — ${j.error.code}` : ''}</td>
              </tr>`,
            )}</tbody>
          </table>`
    }
  </div>`;
}

function Locations() {
  const [list, setList] = useState<LocationView[] | null>(null);
  const [opened, setOpened] = useState<OpenedLocation | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    api.get<{ locations: LocationView[] }>('/api/locations').then((r) => setList(r.locations));
  }, [n]);
  return html`<div>
    <${NetworkLocations} key=${n} onOpened=${setOpened} />
    ${opened ? html`<${SpaceNote} opened=${opened} />` : null}
    ${
      list && list.length > 0
        ? html`<ul class="plain">${list.map(
            (l) => html`<li class="row">${l.name}
            <button class="secondary" onClick=${() => api.post(`/api/locations/${l.id}/delete`).then(() => setN(n + 1))}>Forget ${l.name}</button></li>`,
          )}</ul>`
        : null
    }
  </div>`;
}

export function ToolsScreen() {
  const [tool, setTool] = useState<'check' | 'merge' | 'logs' | 'shares'>('check');
  const tabs = [
    ['check', 'Check a backup'],
    ['merge', 'Merge backups'],
    ['logs', 'Logs'],
    ['shares', 'Network locations'],
  ] as const;
  return html`<main>
    <${StepHeading}>Tools</${StepHeading}>
    <div class="tabs" role="tablist">
      ${tabs.map(
        ([id, label]) =>
          html`<button role="tab" aria-selected=${tool === id} class=${tool === id ? 'primary' : 'secondary'} onClick=${() => setTool(id)}>${label}</button>`,
      )}
    </div>
    <section role="tabpanel">
      ${tool === 'check' ? html`<${ImageJob} key="check" kind="check" />` : tool === 'merge' ? html`<${ImageJob} key="merge" kind="merge" />` : tool === 'logs' ? html`<${Logs} />` : html`<${Locations} />`}
    </section>
  </main>`;
}
