/**
 * Network boot (shown when this server runs `rescue pxe serve`): the PXE server's settings and
 * warnings, and every machine it has seen with how far its boot got — DHCP, TFTP, HTTP, rescue up,
 * job — the last problem in words, and the trace of what it was answered. Refreshed every 2 s.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api } from '../api.ts';
import { ErrorBox } from '../components.ts';
import { when } from '../format.ts';
import { html } from '../html.ts';

export interface PxeServerView {
  interface: string;
  ip: string;
  prefix: number;
  mode: 'proxy' | 'full';
  range?: string;
  baseUrl: string;
  build: string;
  otherDhcpServers: string[];
  warnings: string[];
}

export interface PxeClientView {
  mac: string;
  arch?: number;
  firmware?: string;
  uuid?: string;
  ip?: string;
  stage: 'dhcp' | 'tftp' | 'http' | 'rescue' | 'job';
  problem?: string;
  rescueUrl?: string;
  job?: { id?: string; kind?: string; state?: string; percent?: number };
  firstSeen: string;
  lastSeen: string;
  trace: { at: string; text: string }[];
}

const STAGES: [PxeClientView['stage'], string][] = [
  ['dhcp', 'DHCP'],
  ['tftp', 'Boot loader'],
  ['http', 'Rescue download'],
  ['rescue', 'Rescue up'],
  ['job', 'Job'],
];

function Stage(props: { client: PxeClientView }) {
  const at = STAGES.findIndex(([s]) => s === props.client.stage);
  return html`<ol class="steps" aria-label="Boot progress">${STAGES.map(
    ([, label], i) =>
      html`<li class=${i === at ? 'current' : i < at ? 'done' : ''} aria-current=${i === at ? 'step' : undefined}>${label}</li>`,
  )}</ol>`;
}

function jobText(j: PxeClientView['job']): string {
  if (!j) return '';
  return `${j.kind ?? 'job'} ${j.state ?? ''}${j.percent !== undefined && j.state === 'running' ? ` ${j.percent} %` : ''}`;
}

export function PxeScreen() {
  const [data, setData] = useState<{ server: PxeServerView; clients: PxeClientView[] } | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // One request at a time (a slow answer must not be overtaken by an older one).
    const load = () =>
      api
        .get<{ server: PxeServerView; clients: PxeClientView[] }>('/api/pxe/clients')
        .then((r) => {
          if (stop) return;
          setData(r);
          setError(null);
        })
        .catch((e) => {
          if (!stop) setError(e);
        })
        .finally(() => {
          if (!stop) timer = setTimeout(load, 2000);
        });
    load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, []);
  if (error && !data) return html`<main><h2>Network boot</h2><${ErrorBox} error=${error} /></main>`;
  if (!data) return html`<main><h2>Network boot</h2><p>Loading…</p></main>`;
  const s = data.server;
  return html`<main>
    <h2>Network boot</h2>
    <p>
      Computers on the network of <strong class="mono">${s.interface}</strong> (${s.ip}/${s.prefix}) start the rescue
      system when they boot from the network (PXE) — BIOS and UEFI alike. Set them to network boot in their firmware
      menu (often F12).
    </p>
    <p class="hint">
      ${
        s.mode === 'full'
          ? html`This server hands out addresses ${s.range} (full DHCP).`
          : html`Addresses come from the network's own DHCP server${s.otherDhcpServers.length > 0 ? html` (<span class="mono">${s.otherDhcpServers.join(', ')}</span>)` : null}; this server adds the boot information (proxy DHCP).`
      }
      ${' '}Rescue build <span class="mono">${s.build}</span>.
    </p>
    ${s.warnings.map((w) => html`<p class="warn" role="alert">${w}</p>`)}
    ${error ? html`<${ErrorBox} error=${error} title="The list could not be refreshed" />` : null}
    <h3>Computers seen (${data.clients.length})</h3>
    ${
      data.clients.length === 0
        ? html`<p>None yet. Start a computer on this network and choose network boot.</p>`
        : html`<div class="pxe-clients">${data.clients.map(
            (c) => html`<section class="disk pxe-client" aria-label=${`Computer ${c.mac}`}>
              <div class="disk-title"><span class="mono">${c.mac}</span>${c.firmware ? ` · ${c.firmware}` : ''}${c.ip ? html` · <span class="mono">${c.ip}</span>` : null}</div>
              <${Stage} client=${c} />
              ${c.problem ? html`<p class="warn">${c.problem}</p>` : null}
              ${c.job ? html`<p>${jobText(c.job)}</p>` : null}
              ${c.rescueUrl ? html`<p><a class="button" href=${c.rescueUrl} target="_blank" rel="noopener">Open its rescue screen</a></p>` : null}
              <details>
                <summary>What happened (last seen ${when(c.lastSeen)})</summary>
                <ol class="log">${c.trace.map((t) => html`<li><span class="mono">${t.at.slice(11, 19)}</span> ${t.text}</li>`)}</ol>
              </details>
            </section>`,
          )}</div>`
    }
  </main>`;
}
