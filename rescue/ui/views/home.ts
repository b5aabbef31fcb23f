/** Home: the disks of this machine (refreshed while it is shown), backups found, recent jobs. */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, type DiskReport, type ImageChain, type Job } from '../api.ts';
import { DiskCard, ErrorBox } from '../components.ts';
import { bytes, when } from '../format.ts';
import { html } from '../html.ts';

export function useDisks(intervalMs = 3000): { disks: DiskReport[] | null; error: ApiError | null } {
  const [disks, setDisks] = useState<DiskReport[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    let stop = false;
    const load = () =>
      api
        .get<{ disks: DiskReport[] }>('/api/disks')
        .then((r) => {
          if (stop) return;
          setDisks(r.disks);
          setError(null);
        })
        .catch((e) => {
          if (!stop) setError(e);
        });
    load();
    // Disks come and go (USB): the list follows without a reload.
    const t = setInterval(load, intervalMs);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, [intervalMs]);
  return { disks, error };
}

export function useImages(extraFolder?: string): {
  chains: ImageChain[] | null;
  error: ApiError | null;
  reload: () => void;
} {
  const [chains, setChains] = useState<ImageChain[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    const q = extraFolder ? `?folder=${encodeURIComponent(extraFolder)}` : '';
    api
      .get<{ chains: ImageChain[] }>(`/api/images${q}`)
      .then((r) => {
        setChains(r.chains);
        setError(null);
      })
      .catch(setError);
  }, [extraFolder, n]);
  return { chains, error, reload: () => setN(n + 1) };
}

export function HomeScreen() {
  const { disks, error } = useDisks();
  const { chains } = useImages();
  const attached = useAttachedScan();
  const [jobs, setJobs] = useState<Job[]>([]);
  useEffect(() => {
    api.get<{ jobs: Job[] }>('/api/jobs/history').then(
      (r) => setJobs(r.jobs.slice(0, 5)),
      () => {},
    );
  }, []);
  return html`<main>
    <h2>What do you want to do?</h2>
    <div class="actions">
      <a class="action" href="#/restore"><strong>Restore</strong><span>Put a backup back onto a disk</span></a>
      <a class="action" href="#/clone"><strong>Clone</strong><span>Copy a disk or partition to another disk</span></a>
      <a class="action" href="#/backup"><strong>Back up</strong><span>Save a disk or partition as an image</span></a>
      <a class="action" href="#/tools"><strong>Tools</strong><span>Check or merge images, logs</span></a>
    </div>
    <h2>Disks</h2>
    <${ErrorBox} error=${error} />
    ${disks === null ? html`<p>Looking for disks…</p>` : disks.length === 0 ? html`<p>No disks found.</p>` : disks.map((d) => html`<${DiskCard} disk=${d} />`)}
    <h2>Backups found</h2>
    ${
      chains === null
        ? html`<p>Looking for backups…</p>`
        : chains.length === 0
          ? html`<p>No backup images in the known folders.</p>`
          : html`<ul class="plain">${chains.map((c) => {
              const last = c.points[c.points.length - 1];
              return html`<li><span class="mono">${c.points[0].path}</span> — ${c.points.length} point${c.points.length > 1 ? 's' : ''}, last ${when(last.created)}${last.encrypted ? ' · encrypted' : ''} · ${bytes(c.points.reduce((n, p) => n + p.bytes, 0))}</li>`;
            })}</ul>`
    }
    <${AttachedScanButton} s=${attached} />
    ${
      attached.chains?.length
        ? html`<ul class="plain">${attached.chains.map((c) => html`<li><span class="mono">${c.points[0].path.split('/').pop()}</span> on <span class="mono">${c.disk}</span> partition ${c.partition} — ${c.points.length} point${c.points.length > 1 ? 's' : ''}, last ${when(c.points[c.points.length - 1].created)}</li>`)}</ul>`
        : null
    }
    <h2>Recent jobs</h2>
    ${
      jobs.length === 0
        ? html`<p>None yet.</p>`
        : html`<ul class="plain">${jobs.map((j) => html`<li><a href=${`#/jobs/${j.id}`}>${j.summary}</a> — ${j.state}${j.finished ? `, ${when(j.finished)}` : ''}</li>`)}</ul>`
    }
  </main>`;
}

export type AttachedChain = ImageChain & { disk: string; partition: number };

/** "Look on attached disks": the server mounts their partitions read-only and lists the backups. */
export function useAttachedScan() {
  const [chains, setChains] = useState<AttachedChain[] | null>(null);
  const [skipped, setSkipped] = useState<{ disk: string; partition: number; why: string }[]>([]);
  const [scanning, setScanning] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const scan = async () => {
    setScanning(true);
    setError(null);
    try {
      const r = await api.post<{ chains: AttachedChain[]; skipped: typeof skipped }>('/api/images/attached');
      setChains(r.chains);
      setSkipped(r.skipped);
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setScanning(false);
    }
  };
  return { chains, skipped, scanning, error, scan };
}

export function AttachedScanButton(props: { s: ReturnType<typeof useAttachedScan> }) {
  const s = props.s;
  return html`<div class="row">
      <button class="secondary" disabled=${s.scanning} onClick=${s.scan}>${s.scanning ? 'Looking on the attached disks…' : 'Look on attached disks (USB …)'}</button>
      ${
        s.chains !== null && !s.scanning
          ? html`<span>${s.chains.length === 0 ? 'No backups on the attached disks.' : `${s.chains.length} backup${s.chains.length === 1 ? '' : 's'} found on attached disks.`}</span>`
          : null
      }
    </div>
    ${
      s.skipped.length > 0
        ? html`<details><summary>${s.skipped.length} partition(s) could not be looked at</summary><ul>${s.skipped.map((x) => html`<li>${x.disk} partition ${x.partition}: ${x.why}</li>`)}</ul></details>`
        : null
    }
    <${ErrorBox} error=${s.error} title="The attached disks could not be searched" />`;
}
