/** The rescue screen: pairing when needed, then home and the wizards, routed by the URL's hash. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, setSession as rememberSession, type Session, setCsrf } from './api.ts';
import { ErrorBox } from './components.ts';
import { html } from './html.ts';
import { BackupWizard } from './views/backup.ts';
import { CloneWizard } from './views/clone.ts';
import { HomeScreen } from './views/home.ts';
import { JobScreen } from './views/job.ts';
import { PairScreen } from './views/pair.ts';
import { PxeScreen } from './views/pxe.ts';
import { RestoreWizard } from './views/restore.ts';
import { ToolsScreen } from './views/tools.ts';

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function Screen(props: { hash: string; visit: number }) {
  const [, path, arg] = /^#\/([^/]*)\/?(.*)$/.exec(props.hash) ?? [];
  switch (path) {
    case '':
      return html`<${HomeScreen} />`;
    case 'restore':
      // A new wizard every time the link is followed (key), not the half-finished last one.
      return html`<${RestoreWizard} key=${`${props.hash}:${props.visit}`} />`;
    case 'clone':
      return html`<${CloneWizard} key=${`${props.hash}:${props.visit}`} />`;
    case 'backup':
      return html`<${BackupWizard} key=${`${props.hash}:${props.visit}`} />`;
    case 'tools':
      return html`<${ToolsScreen} key=${`${props.hash}:${props.visit}`} />`;
    case 'jobs':
      return html`<${JobScreen} id=${arg} />`;
    case 'pxe':
      return html`<${PxeScreen} />`;
    default:
      return html`<main><h2>Not here yet</h2><p>This part of the rescue screen is not available in this version.</p><p><a href="#/">Back to the start</a></p></main>`;
  }
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const hash = useHash();
  // Following the link of the screen already shown starts it afresh (a new wizard).
  const [visit, setVisit] = useState(0);
  useEffect(() => {
    api
      .get<Session>('/api/session')
      .then((s) => {
        if (s.csrf) setCsrf(s.csrf);
        rememberSession(s);
        setSession(s);
      })
      .catch(setError);
  }, []);
  // "Network boot" only where this server is a PXE server (rescue pxe serve).
  const [pxe, setPxe] = useState(false);
  useEffect(() => {
    if (!session?.paired) return;
    api
      .get('/api/pxe/clients')
      .then(() => setPxe(true))
      .catch(() => setPxe(false));
  }, [session?.paired]);
  const nav = [
    ['#/', 'Home'],
    ['#/restore', 'Restore'],
    ['#/clone', 'Clone'],
    ['#/backup', 'Back up'],
    ['#/tools', 'Tools'],
    ...(pxe ? [['#/pxe', 'Network boot']] : []),
  ];
  return html`<div class="app">
    <header>
      <span class="brand">Rescue</span>
      ${
        session?.paired
          ? html`<nav aria-label="Main">${nav.map(
              ([href, label]) =>
                html`<a href=${href} onClick=${() => href === hash && setVisit(visit + 1)} aria-current=${hash === href || (href !== '#/' && hash.startsWith(href)) ? 'page' : undefined}>${label}</a>`,
            )}</nav>`
          : null
      }
    </header>
    ${
      session?.remote
        ? html`<div class="remote-bar">Other computers: open <span class="mono">${session.remote.url}</span> and type the PIN <strong class="mono">${session.remote.pin}</strong></div>`
        : null
    }
    ${
      error
        ? html`<main><${ErrorBox} error=${error} title="The rescue system does not answer" /></main>`
        : session === null
          ? html`<main><p>Connecting…</p></main>`
          : !session.paired
            ? html`<${PairScreen} onPaired=${(csrf: string) => {
                setCsrf(csrf);
                setSession({ local: false, paired: true, csrf });
              }} />`
            : html`<${Screen} hash=${hash} visit=${visit} />`
    }
  </div>`;
}

const root = document.getElementById('app')!;
// The static "Loading…" placeholder goes; preact would otherwise keep it beside the app.
root.textContent = '';
render(html`<${App} />`, root);
