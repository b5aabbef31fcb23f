/** What the wizards share: the back/next row and the running-job step. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { type ApiError, api, currentSession, type Job } from '../api.ts';
import { ErrorBox, JobProgress, StepHeading, useJob } from '../components.ts';
import { html } from '../html.ts';

export function Nav(props: {
  back?: () => void;
  next?: () => void;
  nextLabel?: string;
  nextDisabled?: boolean;
}) {
  return html`<div class="row nav">
    ${props.back ? html`<button class="secondary" onClick=${props.back}>Back</button>` : null}
    ${props.next ? html`<button class="primary" onClick=${props.next} disabled=${props.nextDisabled}>${props.nextLabel ?? 'Next'}</button>` : null}
  </div>`;
}

/** What now: restart or shut down (on the rescue system itself), or stay. */
function Finish() {
  const [error, setError] = useState<ApiError | null>(null);
  const [asked, setAsked] = useState<string | null>(null);
  const power = async (action: 'reboot' | 'poweroff') => {
    setError(null);
    try {
      await api.post('/api/power', { action });
      setAsked(action === 'reboot' ? 'Restarting…' : 'Shutting down…');
    } catch (e) {
      setError(e as ApiError);
    }
  };
  if (asked) return html`<p class="job-state">${asked}</p>`;
  return html`<div class="row">
      ${
        currentSession()?.power
          ? html`<button class="primary" onClick=${() => power('reboot')}>Restart now</button>
            <button class="secondary" onClick=${() => power('poweroff')}>Shut down</button>`
          : null
      }
      <a class="button" href="#/">Back to the start</a>
    </div>
    <${ErrorBox} error=${error} />`;
}

/** The last step of every wizard: live progress, then the outcome in words. */
export function RunningStep(props: {
  id: string;
  noun: string;
  doneText: string;
  children?: ComponentChildren;
}) {
  const [ended, setEnded] = useState<Job | null>(null);
  const job = useJob(props.id, setEnded);
  if (!job) return html`<p>Starting…</p>`;
  const title = ended
    ? ended.state === 'done'
      ? `${props.noun} finished`
      : ended.state === 'cancelled'
        ? `${props.noun} cancelled`
        : `${props.noun} failed`
    : `${props.noun}…`;
  return html`<section>
    <${StepHeading}>${title}</${StepHeading}>
    <${JobProgress} job=${job} onCancel=${() => api.post(`/api/jobs/${props.id}/cancel`)} />
    <${ErrorBox} error=${job.error} title=${`The ${props.noun.toLowerCase()} stopped`} />
    ${ended?.state === 'done' ? html`<p class="ok">${props.doneText}</p>` : null}
    ${ended ? props.children : null}
    ${ended ? html`<${Finish} />` : null}
  </section>`;
}
