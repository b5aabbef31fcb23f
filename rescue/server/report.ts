/**
 * A rescue system that was network-booted tells its PXE server how it is doing: once it is up, then
 * every few seconds with its current job (kind, state, percent), so the server's clients page shows
 * each machine from DHCP to "restore 40 %". The server's URL and this machine's MAC come from the
 * kernel command line the PXE boot menu wrote (rescue.server=, rescue.mac=).
 */
import type { JobManager, JobView } from './jobs.ts';

export interface ReportOptions {
  /** The PXE server, e.g. http://192.168.50.1/ */
  server: string;
  mac?: string;
  /** Where this rescue system answers (asked anew: the lease may come late). */
  ownUrl: () => string | undefined;
  jobs: JobManager;
  intervalMs?: number;
  onError?: (message: string) => void;
}

function current(jobs: JobView[]): JobView | undefined {
  return jobs.find((j) => j.state === 'running') ?? jobs.find((j) => j.state === 'queued') ?? jobs.at(-1);
}

export function startReporting(o: ReportOptions): () => void {
  const target = new URL('pxe/hello', o.server.endsWith('/') ? o.server : `${o.server}/`).toString();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failing = false;
  const send = async () => {
    const j = current(o.jobs.list());
    const p = j?.progress;
    const body = {
      mac: o.mac,
      url: o.ownUrl(),
      job: j
        ? {
            id: j.id,
            kind: j.kind,
            state: j.state,
            percent: p && p.bytesTotal > 0 ? Math.round((p.bytesDone / p.bytesTotal) * 100) : undefined,
          }
        : undefined,
    };
    try {
      const r = await fetch(target, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      failing = false;
    } catch (e) {
      // Said once, not every few seconds: the server may simply be gone.
      if (!failing) o.onError?.(`cannot reach the PXE server at ${target}: ${(e as Error).message}`);
      failing = true;
    }
  };
  const loop = async () => {
    await send();
    if (!stopped) timer = setTimeout(loop, o.intervalMs ?? 5000);
  };
  void loop();
  const unsubscribe = o.jobs.subscribe((u) => {
    if (u.type === 'job') void send(); // state changes at once, progress with the next tick
  });
  return () => {
    stopped = true;
    clearTimeout(timer);
    unsubscribe();
  };
}
