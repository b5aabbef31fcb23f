/**
 * The backup wizard (disks that are not in use): what (disk, partitions, system) → source →
 * destination and name → options (compression, encryption, splitting, comment, check) → summary →
 * progress. Nothing is overwritten (images are never replaced), so there is no typed confirmation.
 */
import { useState } from 'preact/hooks';
import { type ApiError, api, type DiskReport, type Job } from '../api.ts';
import { DiskCard, ErrorBox, StepHeading, Steps } from '../components.ts';
import { bytes } from '../format.ts';
import { html, inputValue as value } from '../html.ts';
import { useDisks } from './home.ts';
import { NetworkLocations, type OpenedLocation, SpaceNote } from './locations.ts';
import { Nav, RunningStep } from './wizard.ts';

const STEPS = ['What', 'From', 'Where to', 'Options', 'Summary', 'Back up'];

type Kind = 'disk' | 'partition' | 'system';

interface Choice {
  kind: Kind;
  source?: DiskReport;
  partitions: number[];
  destination: string;
  name: string;
  compression: 'none' | 'normal' | 'high';
  encrypt: boolean;
  password: string;
  password2: string;
  splitMB: string;
  comment: string;
  check: boolean;
}

const checked = (e: Event) => (e.target as HTMLInputElement).checked;

export function BackupWizard() {
  const [step, setStep] = useState(0);
  const [c, setC] = useState<Choice>({
    kind: 'disk',
    partitions: [],
    destination: '',
    name: '',
    compression: 'normal',
    encrypt: false,
    password: '',
    password2: '',
    splitMB: '',
    comment: '',
    check: true,
  });
  const [jobId, setJobId] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [opened, setOpened] = useState<OpenedLocation | null>(null);
  const { disks, error: diskError } = useDisks();
  const set = (x: Partial<Choice>) => setC((old) => ({ ...old, ...x }));
  const next = () => setStep((s) => s + 1);
  const back = () => setStep((s) => Math.max(0, s - 1));
  const passwordProblem = c.encrypt
    ? c.password.length < 8
      ? 'At least 8 characters.'
      : c.password !== c.password2
        ? 'The two passwords differ.'
        : null
    : null;
  const splitProblem =
    c.splitMB !== '' && !(/^\d+$/.test(c.splitMB) && Number(c.splitMB) >= 50)
      ? 'Split size: a whole number of MB, at least 50.'
      : null;

  const start = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await api.post<{ job: Job }>('/api/jobs', {
        kind: 'backup',
        type: c.kind,
        sources: [{ path: c.source!.path, partitions: c.kind === 'partition' ? c.partitions : undefined }],
        destination: c.destination.trim(),
        name: c.name.trim() || undefined,
        compression: c.compression,
        password: c.encrypt ? c.password : undefined,
        splitBytes: c.splitMB ? Number(c.splitMB) * 1_000_000 : undefined,
        comment: c.comment || undefined,
        check: c.check,
      });
      setJobId(r.job.id);
      setStep(5);
    } catch (e) {
      setError(e as ApiError);
      setBusy(false);
    }
  };

  const list = disks ?? [];
  const steps = [
    () => html`<section>
      <${StepHeading}>What should be backed up?</${StepHeading}>
      <fieldset class="choices"><legend class="sr-only">Kind</legend>
        ${(
          [
            ['disk', 'A whole disk', 'Every partition and the partition table.'],
            ['partition', 'Partitions', 'One or more partitions of a disk.'],
            ['system', 'The system', 'The partitions the operating system needs to start.'],
          ] as const
        ).map(
          ([kind, title, text]) => html`<label class="choice">
            <input type="radio" name="kind" checked=${c.kind === kind} onChange=${() => set({ kind })} />
            <span><strong>${title}</strong><br />${text}</span>
          </label>`,
        )}
      </fieldset>
      <${Nav} next=${next} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Back up which disk?</${StepHeading}>
      <${ErrorBox} error=${diskError} />
      <fieldset class="choices"><legend class="sr-only">Disks</legend>${list.map(
        (d) => html`<label class=${`choice${d.error ? ' disabled' : ''}`}>
          <input type="radio" name="source" disabled=${!!d.error} checked=${c.source?.path === d.path} onChange=${() => set({ source: d, partitions: [] })} />
          <${DiskCard} disk=${d}>
            ${
              c.kind === 'partition' && c.source?.path === d.path
                ? d.partitions.map(
                    (
                      p,
                    ) => html`<label class="check"><input type="checkbox" checked=${c.partitions.includes(p.number)}
                    onChange=${(e: Event) => set({ partitions: checked(e) ? [...c.partitions, p.number].sort((a, b) => a - b) : c.partitions.filter((n) => n !== p.number) })} />
                    Partition ${p.number}: ${bytes(p.size)} ${p.fs?.type ?? ''}${p.fs?.label ? ` “${p.fs.label}”` : ''}</label>`,
                  )
                : null
            }
          </${DiskCard}>
        </label>`,
      )}</fieldset>
      <${Nav} back=${back} next=${next} nextDisabled=${!c.source || (c.kind === 'partition' && c.partitions.length === 0)} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Where should the backup go?</${StepHeading}>
      <label for="destination">Folder (on another disk, a USB stick or a network share)</label>
      <input id="destination" class="wide" placeholder="/mnt/usb/backups" value=${c.destination} onInput=${(e: Event) => set({ destination: value(e) })} />
      <${NetworkLocations} onOpened=${(o: OpenedLocation) => {
        setOpened(o);
        set({ destination: o.path });
      }} />
      ${opened ? html`<${SpaceNote} opened=${opened} />` : null}
      <label for="name">Name of the backup</label>
      <input id="name" placeholder="(a name with today's date)" value=${c.name} onInput=${(e: Event) => set({ name: value(e) })} />
      <${Nav} back=${back} next=${next} nextDisabled=${c.destination.trim() === ''} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Options</${StepHeading}>
      <fieldset class="choices"><legend>Compression</legend>
        ${(
          [
            ['none', 'None', 'Fastest, largest.'],
            ['normal', 'Normal', 'Fast and much smaller (recommended).'],
            ['high', 'High', 'Smaller still, slower.'],
          ] as const
        ).map(
          ([level, title, text]) => html`<label class="choice">
            <input type="radio" name="compression" checked=${c.compression === level} onChange=${() => set({ compression: level })} />
            <span><strong>${title}</strong> — ${text}</span>
          </label>`,
        )}
      </fieldset>
      <label class="check"><input type="checkbox" checked=${c.encrypt} onChange=${(e: Event) => set({ encrypt: checked(e) })} /> Encrypt with a password (AES-256)</label>
      ${
        c.encrypt
          ? html`<label for="pw1">Password</label>
          <input id="pw1" type="password" autocomplete="new-password" value=${c.password} onInput=${(e: Event) => set({ password: value(e) })} />
          <label for="pw2">The same password again</label>
          <input id="pw2" type="password" autocomplete="new-password" value=${c.password2} onInput=${(e: Event) => set({ password2: value(e) })} />
          <p class="warn">Without this password the backup cannot be restored. Nobody can recover it.</p>
          ${passwordProblem ? html`<p class="warn">${passwordProblem}</p>` : null}`
          : null
      }
      <label for="split">Split into files of at most (MB; empty = one file, FAT32 is handled automatically)</label>
      <input id="split" inputmode="numeric" value=${c.splitMB} onInput=${(e: Event) => set({ splitMB: value(e) })} />
      ${splitProblem ? html`<p class="warn">${splitProblem}</p>` : null}
      <label for="comment">Comment</label>
      <input id="comment" class="wide" maxlength="1024" value=${c.comment} onInput=${(e: Event) => set({ comment: value(e) })} />
      <label class="check"><input type="checkbox" checked=${c.check} onChange=${(e: Event) => set({ check: checked(e) })} /> Check the backup when it is written</label>
      <${Nav} back=${back} next=${next} nextDisabled=${!!passwordProblem || !!splitProblem} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Summary</${StepHeading}>
      <ul class="plain">
        <li>${c.kind === 'partition' ? `Partition${c.partitions.length > 1 ? 's' : ''} ${c.partitions.join(', ')} of` : c.kind === 'system' ? 'The system on' : 'The whole disk'} <span class="mono">${c.source?.path}</span></li>
        <li>into <span class="mono">${c.destination}</span>${c.name ? html` as <strong>${c.name}</strong>` : ''}</li>
        <li>compression ${c.compression}${c.encrypt ? ', encrypted' : ''}${c.splitMB ? `, split every ${c.splitMB} MB` : ''}${c.check ? ', checked afterwards' : ''}</li>
      </ul>
      <${ErrorBox} error=${error} title="The backup did not start" />
      <${Nav} back=${back} next=${start} nextLabel="Start the backup" nextDisabled=${busy} />
    </section>`,
    () =>
      jobId ? html`<${RunningStep} id=${jobId} noun="Backup" doneText="The backup is complete." />` : null,
  ];
  return html`<main>
    <h1 class="sr-only">Back up</h1>
    <${Steps} steps=${STEPS} current=${step} />
    ${steps[step]()}
  </main>`;
}
