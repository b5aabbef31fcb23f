/** Another computer's first screen: type the PIN shown on the rescue screen. */
import { useState } from 'preact/hooks';
import { type ApiError, api } from '../api.ts';
import { ErrorBox, StepHeading } from '../components.ts';
import { html } from '../html.ts';

export function PairScreen(props: { onPaired: (csrf: string) => void }) {
  const [pin, setPin] = useState('');
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await api.post<{ csrf: string }>('/api/pair', { pin: pin.trim() });
      props.onPaired(r.csrf);
    } catch (err) {
      setError(err as ApiError);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="narrow">
    <${StepHeading}>Connect to this rescue system</${StepHeading}>
    <p>For safety, a computer on the network must be paired first. Type the 6-digit PIN shown on the rescue system's own screen.</p>
    <form onSubmit=${submit}>
      <label for="pin">PIN</label>
      <input id="pin" inputmode="numeric" autocomplete="one-time-code" maxlength="6"
        onInput=${(e: Event) => setPin((e.target as HTMLInputElement).value)} />
      <div class="row"><button type="submit" class="primary" disabled=${busy || !/^\d{6}$/.test(pin.trim())}>Connect</button></div>
    </form>
    <${ErrorBox} error=${error} title="Not connected" />
  </main>`;
}
