/** One job: live progress while it runs, its log and result afterwards. */
import { api } from '../api.ts';
import { ErrorBox, JobProgress, useJob } from '../components.ts';
import { html } from '../html.ts';

export function JobScreen(props: { id: string }) {
  const job = useJob(props.id);
  if (!job) return html`<main><p>Loading the job…</p></main>`;
  return html`<main>
    <h2>${job.summary}</h2>
    <${JobProgress} job=${job} onCancel=${() => api.post(`/api/jobs/${job.id}/cancel`)} />
    <${ErrorBox} error=${job.error} />
    <details>
      <summary>Whole log</summary>
      <ul class="log full">${job.log.map((l) => html`<li class=${l.level}><span class="mono">${new Date(l.time).toLocaleTimeString()}</span> ${l.message}</li>`)}</ul>
    </details>
    <p><a href="#/">Back to the start</a></p>
  </main>`;
}
