/** Saved network locations (SMB shares, NAS folders): add one, open one, see the room left on it. */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api } from '../api.ts';
import { ErrorBox } from '../components.ts';
import { bytes } from '../format.ts';
import { html, inputValue as value } from '../html.ts';

export interface LocationView {
  id: string;
  name: string;
  host: string;
  share: string;
  folder?: string;
  username?: string;
  hasPassword: boolean;
  mounted: string | null;
}

export interface OpenedLocation {
  location: LocationView;
  path: string;
  method: string;
  freeBytes: number | null;
  totalBytes: number | null;
  lowSpace: boolean;
}

export function SpaceNote(props: { opened: OpenedLocation }) {
  const o = props.opened;
  if (o.freeBytes === null) return html`<p>Opened <span class="mono">${o.path}</span>.</p>`;
  return html`<p>
    Opened <span class="mono">${o.location.name}</span>: ${bytes(o.freeBytes)} free of ${bytes(o.totalBytes)}.
    ${o.lowSpace ? html`<span class="warn">Little free space is left on this share: a backup may not fit.</span>` : null}
  </p>`;
}

export function NetworkLocations(props: { onOpened: (o: OpenedLocation) => void }) {
  const [list, setList] = useState<LocationView[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [adding, setAdding] = useState(false);
  const [form, setForm] = useState({
    host: '',
    share: '',
    folder: '',
    username: '',
    password: '',
    anonymous: false,
  });
  const reload = () =>
    api.get<{ locations: LocationView[] }>('/api/locations').then(
      (r) => setList(r.locations),
      (e) => setError(e),
    );
  useEffect(() => {
    void reload();
  }, []);
  const open = async (id: string) => {
    setBusy(id);
    setError(null);
    try {
      props.onOpened(await api.post<OpenedLocation>(`/api/locations/${id}/open`));
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(null);
    }
  };
  const add = async (e: Event) => {
    e.preventDefault();
    setBusy('new');
    setError(null);
    try {
      const r = await api.post<{ location: LocationView }>('/api/locations', {
        host: form.host.trim(),
        share: form.share.trim(),
        folder: form.folder.trim() || undefined,
        username: form.anonymous ? undefined : form.username.trim() || undefined,
        password: form.anonymous ? undefined : form.password,
      });
      setAdding(false);
      await reload();
      setBusy(null);
      await open(r.location.id);
    } catch (err) {
      setError(err as ApiError);
      setBusy(null);
    }
  };
  return html`<div class="locations">
    <h3>Network locations</h3>
    ${
      list === null
        ? html`<p>Loading…</p>`
        : list.length === 0
          ? html`<p>None saved yet.</p>`
          : html`<ul class="plain">${list.map(
              (l) => html`<li class="row">
              <span><strong>${l.name}</strong> <span class="mono">\\\\${l.host}\\${l.share}${l.folder ? `\\${l.folder}` : ''}</span>${l.username ? ` as ${l.username}` : ' (anonymous)'}</span>
              <button class="secondary" disabled=${busy !== null} onClick=${() => open(l.id)}>${busy === l.id ? 'Connecting…' : 'Open'}</button>
            </li>`,
            )}</ul>`
    }
    ${
      adding
        ? html`<form class="location-form" onSubmit=${add}>
          <label for="loc-host">Computer (name or IP address)</label>
          <input id="loc-host" placeholder="nas.local" value=${form.host} onInput=${(e: Event) => setForm({ ...form, host: value(e) })} />
          <label for="loc-share">Share</label>
          <input id="loc-share" placeholder="backups" value=${form.share} onInput=${(e: Event) => setForm({ ...form, share: value(e) })} />
          <label for="loc-folder">Folder in the share (optional)</label>
          <input id="loc-folder" value=${form.folder} onInput=${(e: Event) => setForm({ ...form, folder: value(e) })} />
          <label class="check"><input type="checkbox" checked=${form.anonymous} onChange=${(e: Event) => setForm({ ...form, anonymous: (e.target as HTMLInputElement).checked })} /> Anonymous (guest) access</label>
          ${
            form.anonymous
              ? null
              : html`<label for="loc-user">User name</label>
                <input id="loc-user" autocomplete="off" value=${form.username} onInput=${(e: Event) => setForm({ ...form, username: value(e) })} />
                <label for="loc-pass">Password</label>
                <input id="loc-pass" type="password" autocomplete="off" value=${form.password} onInput=${(e: Event) => setForm({ ...form, password: value(e) })} />
                <p class="hint">The password is kept on this rescue system so that it can reconnect.</p>`
          }
          <div class="row">
            <button type="submit" class="primary" disabled=${busy !== null || !form.host.trim() || !form.share.trim()}>${busy === 'new' ? 'Connecting…' : 'Connect'}</button>
            <button type="button" class="secondary" onClick=${() => setAdding(false)}>Cancel</button>
          </div>
        </form>`
        : html`<button class="secondary" onClick=${() => setAdding(true)}>Add a network location…</button>`
    }
    <${ErrorBox} error=${error} title="The network location cannot be opened" />
  </div>`;
}
