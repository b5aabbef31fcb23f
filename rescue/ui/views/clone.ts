/**
 * The clone wizard: what (disk, partition, system) → source → target → options → typed
 * confirmation → progress. The target is read back and compared by default (verify).
 */
import { useState } from 'preact/hooks';
import { type ApiError, api, type DiskReport, type Job } from '../api.ts';
import { DiskCard, ErrorBox, StepHeading, Steps, TypedConfirm } from '../components.ts';
import { bytes } from '../format.ts';
import { html } from '../html.ts';
import { useDisks } from './home.ts';
import { Nav, RunningStep } from './wizard.ts';

const STEPS = ['What', 'From', 'To', 'Options', 'Confirm', 'Clone'];

type Kind = 'disk' | 'partition' | 'system';

interface Choice {
  kind: Kind;
  source?: DiskReport;
  sourcePartition?: number;
  target?: DiskReport;
  /** 'whole' disk, into partition N, or a new partition in free space. */
  into: 'whole' | 'free' | number;
  edit: 'copy' | 'fill' | 'shrink';
  align: boolean;
  newIds: boolean;
  sectorBySector: boolean;
  verify: boolean;
}

function DiskChoices(props: {
  name: string;
  disks: DiskReport[];
  selected?: string;
  disabled: (d: DiskReport) => string | null;
  pick: (d: DiskReport) => void;
  children?: (d: DiskReport) => unknown;
}) {
  return html`<fieldset class="choices"><legend class="sr-only">Disks</legend>${props.disks.map((d) => {
    const why = props.disabled(d);
    return html`<label class=${`choice${why ? ' disabled' : ''}`}>
      <input type="radio" name=${props.name} disabled=${!!why} checked=${props.selected === d.path} onChange=${() => props.pick(d)} />
      <${DiskCard} disk=${d}>
        ${why && !d.inUse ? html`<div class="warn">${why}</div>` : null}
        ${props.selected === d.path ? props.children?.(d) : null}
      </${DiskCard}>
    </label>`;
  })}</fieldset>`;
}

export function CloneWizard() {
  const [step, setStep] = useState(0);
  const [c, setC] = useState<Choice>({
    kind: 'disk',
    into: 'whole',
    edit: 'copy',
    align: false,
    newIds: false,
    sectorBySector: false,
    verify: true,
  });
  const [jobId, setJobId] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const { disks, error: diskError } = useDisks();
  const set = (x: Partial<Choice>) => setC((old) => ({ ...old, ...x }));
  const next = () => setStep((s) => s + 1);
  const back = () => setStep((s) => Math.max(0, s - 1));
  const list = disks ?? [];

  const start = async (word: string) => {
    setBusy(true);
    setError(null);
    try {
      const r = await api.post<{ job: Job }>('/api/jobs', {
        kind: 'clone',
        type: c.kind,
        source: c.source!.path,
        sourcePartition: c.kind === 'partition' ? c.sourcePartition : undefined,
        target: c.target!.path,
        targetPartition: typeof c.into === 'number' ? c.into : undefined,
        toFree: c.into === 'free' || undefined,
        sectorBySector: c.sectorBySector || undefined,
        verify: c.verify,
        edit:
          c.kind !== 'partition' && (c.edit !== 'copy' || c.align || c.newIds)
            ? { mode: c.edit, align: c.align, newIds: c.newIds }
            : undefined,
        confirm: word,
      });
      setJobId(r.job.id);
      setStep(5);
    } catch (e) {
      setError(e as ApiError);
      setBusy(false);
    }
  };

  const steps = [
    () => html`<section>
      <${StepHeading}>What should be cloned?</${StepHeading}>
      <fieldset class="choices"><legend class="sr-only">Kind</legend>
        ${(
          [
            ['disk', 'A whole disk', 'Every partition and the partition table, onto another disk.'],
            [
              'partition',
              'One partition',
              'Onto another disk, into one of its partitions or its free space.',
            ],
            [
              'system',
              'The system',
              'The partitions the operating system needs to start, onto another disk (also a smaller SSD).',
            ],
          ] as const
        ).map(
          ([kind, title, text]) => html`<label class="choice">
            <input type="radio" name="kind" checked=${c.kind === kind} onChange=${() => set({ kind, into: 'whole' })} />
            <span><strong>${title}</strong><br />${text}</span>
          </label>`,
        )}
      </fieldset>
      <${Nav} next=${next} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Copy from which disk?</${StepHeading}>
      <${ErrorBox} error=${diskError} />
      <${DiskChoices} name="source" disks=${list} selected=${c.source?.path}
        disabled=${(d: DiskReport) => (d.error ? d.error.message : d.partitions.length === 0 && d.table !== 'none' ? 'Nothing to copy: no partitions' : null)}
        pick=${(d: DiskReport) => set({ source: d, sourcePartition: d.partitions[0]?.number })}>
        ${(d: DiskReport) =>
          c.kind === 'partition' && d.partitions.length > 0
            ? html`<label class="inline">Partition
                <select onChange=${(e: Event) => set({ sourcePartition: Number((e.target as HTMLSelectElement).value) })}>
                  ${d.partitions.map((p) => html`<option value=${p.number} selected=${c.sourcePartition === p.number}>${p.number}: ${bytes(p.size)} ${p.fs?.type ?? ''}${p.fs?.label ? ` “${p.fs.label}”` : ''}</option>`)}
                </select></label>`
            : null}
      </${DiskChoices}>
      <${Nav} back=${back} next=${next} nextDisabled=${!c.source || (c.kind === 'partition' && c.sourcePartition === undefined)} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Copy to which disk?</${StepHeading}>
      <p><strong>What is on it now will be replaced.</strong></p>
      <${DiskChoices} name="target" disks=${list} selected=${c.target?.path}
        disabled=${(d: DiskReport) => (d.path === c.source?.path ? 'This is the source' : d.inUse ? `In use: ${(d.inUseReasons ?? []).join('; ')}` : null)}
        pick=${(d: DiskReport) => set({ target: d, into: 'whole' })}>
        ${(d: DiskReport) =>
          c.kind === 'partition'
            ? html`<label class="inline">Put it
                <select onChange=${(e: Event) => {
                  const v = (e.target as HTMLSelectElement).value;
                  set({ into: v === 'whole' || v === 'free' ? v : Number(v) });
                }}>
                  <option value="whole" selected=${c.into === 'whole'}>over the whole disk</option>
                  <option value="free" selected=${c.into === 'free'}>into its free space (a new partition)</option>
                  ${d.partitions.map((p) => html`<option value=${p.number} selected=${c.into === p.number}>into partition ${p.number} (${bytes(p.size)} ${p.fs?.type ?? ''})</option>`)}
                </select></label>`
            : null}
      </${DiskChoices}>
      <${Nav} back=${back} next=${next} nextDisabled=${!c.target} />
    </section>`,
    () => html`<section>
      <${StepHeading}>How?</${StepHeading}>
      ${
        c.kind !== 'partition'
          ? html`<fieldset class="choices"><legend>Partitions on the target</legend>
            ${(
              [
                ['copy', 'Copy them as they are', 'Same sizes and places.'],
                [
                  'fill',
                  'Use the whole target disk',
                  'Partitions grow in proportion; filesystems are enlarged.',
                ],
                ['shrink', 'Fit onto a smaller disk', 'Filesystems are shrunk to fit, when the data fits.'],
              ] as const
            ).map(
              ([mode, title, text]) => html`<label class="choice">
                <input type="radio" name="edit" checked=${c.edit === mode} onChange=${() => set({ edit: mode })} />
                <span><strong>${title}</strong><br />${text}</span>
              </label>`,
            )}
          </fieldset>
          <label class="check"><input type="checkbox" checked=${c.align} onChange=${(e: Event) => set({ align: (e.target as HTMLInputElement).checked })} /> Align partitions to 1 MiB (SSD alignment)</label>
          <label class="check"><input type="checkbox" checked=${c.newIds} onChange=${(e: Event) => set({ newIds: (e.target as HTMLInputElement).checked })} /> New disk and partition IDs — for a copy that stays in the same computer as the original (Windows boot entries that name the old IDs must be repaired)</label>`
          : null
      }
      <label class="check"><input type="checkbox" checked=${c.sectorBySector} onChange=${(e: Event) => set({ sectorBySector: (e.target as HTMLInputElement).checked })} /> Sector by sector (also the unused space; slower)</label>
      <label class="check"><input type="checkbox" checked=${c.verify} onChange=${(e: Event) => set({ verify: (e.target as HTMLInputElement).checked })} /> Read the copy back and compare it with the source</label>
      <${Nav} back=${back} next=${next} />
    </section>`,
    () => html`<section>
      <${StepHeading}>Check and confirm</${StepHeading}>
      <${TypedConfirm} disk=${c.target ?? null} target=${c.target!.path} busy=${busy} onConfirm=${start}
        what=${`${c.kind === 'partition' ? `partition ${c.sourcePartition} of ${c.source!.path}` : c.kind === 'system' ? `the system on ${c.source!.path}` : c.source!.path} will be copied to ${c.target!.path}${typeof c.into === 'number' ? ` partition ${c.into}` : c.into === 'free' ? ' (its free space)' : ''}.`} />
      <${ErrorBox} error=${error} title="The clone did not start" />
      <${Nav} back=${back} />
    </section>`,
    () => (jobId ? html`<${RunningStep} id=${jobId} noun="Clone" doneText="The copy is complete." />` : null),
  ];
  return html`<main>
    <h1 class="sr-only">Clone</h1>
    <${Steps} steps=${STEPS} current=${step} />
    ${steps[step]()}
  </main>`;
}
