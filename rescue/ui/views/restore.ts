/**
 * The restore wizard: backup → point → what → where → options → typed confirmation → progress.
 * Nothing is written before the person has typed the name of the disk that will be overwritten;
 * the server checks that same word again.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, type DiskReport, type ImageChain, type ImageInfo, type Job } from '../api.ts';
import { DiskCard, ErrorBox, StepHeading, Steps, TypedConfirm } from '../components.ts';
import { bytes, when } from '../format.ts';
import { html } from '../html.ts';
import { AttachedScanButton, useAttachedScan, useDisks, useImages } from './home.ts';
import { NetworkLocations, type OpenedLocation, SpaceNote } from './locations.ts';
import { Nav, RunningStep } from './wizard.ts';

const STEPS = ['Backup', 'Point', 'What', 'Where', 'Options', 'Confirm', 'Restore'];

type EditMode = 'copy' | 'fill' | 'shrink';

interface Choice {
  chain?: ImageChain;
  password?: string;
  info?: ImageInfo;
  /** Partition number of the image to restore alone; undefined = everything. */
  partition?: number;
  target?: string;
  targetDisk?: DiskReport | null;
  /** Into this partition of the target disk. */
  targetPartition?: number;
  edit: EditMode;
  align: boolean;
  sectorBySector: boolean;
}

function ChooseImage(props: { choice: Choice; set: (c: Partial<Choice>) => void; next: () => void }) {
  const [folder, setFolder] = useState('');
  const [asked, setAsked] = useState<string | undefined>(undefined);
  const [opened, setOpened] = useState<OpenedLocation | null>(null);
  const { chains: folderChains, error } = useImages(asked);
  const scan = useAttachedScan();
  const attached = scan.chains;
  const chains =
    folderChains === null
      ? null
      : [
          ...folderChains,
          ...(attached ?? []).filter(
            (a) => !folderChains.some((c) => c.chainId === a.chainId && c.folder === a.folder),
          ),
        ];
  return html`<section>
    <${StepHeading}>Which backup?</${StepHeading}>
    <${ErrorBox} error=${error} />
    ${
      chains === null
        ? html`<p>Looking for backups…</p>`
        : chains.length === 0
          ? html`<p>No backups found in the known folders. Look in another folder below.</p>`
          : html`<fieldset class="choices"><legend class="sr-only">Backups</legend>${chains.map((c) => {
              const last = c.points[c.points.length - 1];
              return html`<label class="choice">
              <input type="radio" name="chain" checked=${props.choice.chain?.chainId === c.chainId} onChange=${() => props.set({ chain: c, info: undefined, password: undefined })} />
              <span><strong class="mono">${c.points[0].path.split('/').pop()}</strong> ${'disk' in c ? html`on <span class="mono">${(c as unknown as { disk: string }).disk}</span> partition ${(c as unknown as { partition: number }).partition}` : html`in <span class="mono">${c.folder}</span>`}<br />
              ${c.points.length} backup point${c.points.length > 1 ? 's' : ''}, the last ${when(last.created)}${last.encrypted ? ' · encrypted' : ''} · ${bytes(c.points.reduce((n, p) => n + p.bytes, 0))}</span>
            </label>`;
            })}</fieldset>`
    }
    <${AttachedScanButton} s=${scan} />
    <${NetworkLocations} onOpened=${(o: OpenedLocation) => {
      setOpened(o);
      setAsked(o.path);
    }} />
    ${opened ? html`<${SpaceNote} opened=${opened} />` : null}
    <form class="row" onSubmit=${(e: Event) => {
      e.preventDefault();
      setAsked(folder.trim() || undefined);
    }}>
      <label for="folder">Look in another folder</label>
      <input id="folder" class="grow" placeholder="/mnt/usb/backups" onInput=${(e: Event) => setFolder((e.target as HTMLInputElement).value)} />
      <button type="submit" class="secondary">Search</button>
    </form>
    <${Nav} next=${props.next} nextDisabled=${!props.choice.chain} />
  </section>`;
}

function ChoosePoint(props: {
  choice: Choice;
  set: (c: Partial<Choice>) => void;
  back: () => void;
  next: () => void;
}) {
  const chain = props.choice.chain!;
  const encrypted = chain.points.some((p) => p.encrypted);
  const [password, setPassword] = useState(props.choice.password ?? '');
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [point, setPoint] = useState<number | undefined>(props.choice.info?.sequence);
  const [overview, setOverview] = useState<ImageInfo | undefined>(props.choice.info);
  const open = async (which?: number) => {
    setBusy(true);
    setError(null);
    try {
      const latest = chain.points[chain.points.length - 1].path;
      const info = await api.post<ImageInfo>('/api/images/info', {
        path: latest,
        password: encrypted ? password : undefined,
        point: which,
      });
      return info;
    } catch (e) {
      setError(e as ApiError);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  const load = async () => {
    const info = await open();
    if (!info) return;
    setOverview(info);
    const usable = info.chain.filter((c) => c.usable);
    setPoint(usable.length ? usable[usable.length - 1].sequence : undefined);
  };
  useEffect(() => {
    if (!overview && !encrypted) void load();
  }, []);
  return html`<section>
    <${StepHeading}>Which moment?</${StepHeading}>
    ${
      encrypted && !overview
        ? html`<form onSubmit=${(e: Event) => {
            e.preventDefault();
            void load();
          }}>
          <p>This backup is encrypted. Its password is needed to read it.</p>
          <label for="password">Password</label>
          <input id="password" type="password" autocomplete="off" onInput=${(e: Event) => setPassword((e.target as HTMLInputElement).value)} />
          <div class="row"><button type="submit" class="primary" disabled=${busy || password === ''}>Open</button></div>
        </form>`
        : null
    }
    <${ErrorBox} error=${error} title="The backup cannot be opened" />
    ${
      overview
        ? html`<fieldset class="choices"><legend class="sr-only">Backup points</legend>${overview.chain.map(
            (c) => html`<label class=${`choice${c.usable ? '' : ' disabled'}`}>
            <input type="radio" name="point" disabled=${!c.usable} checked=${point === c.sequence} onChange=${() => setPoint(c.sequence)} />
            <span><strong>${when(c.created)}</strong> — ${c.type} backup (point ${c.sequence})${c.usable ? '' : html`<br /><span class="warn">Cannot be restored: ${c.why}</span>`}</span>
          </label>`,
          )}</fieldset>`
        : busy
          ? html`<p>Opening the backup…</p>`
          : null
    }
    <${Nav}
      back=${props.back}
      nextDisabled=${busy || point === undefined}
      next=${async () => {
        const info = await open(point);
        if (!info) return;
        props.set({
          info,
          password: encrypted ? password : undefined,
          partition: info.kind === 'partition' ? info.disks[0]?.partitions[0]?.number : undefined,
        });
        props.next();
      }}
    />
  </section>`;
}

function ChooseWhat(props: {
  choice: Choice;
  set: (c: Partial<Choice>) => void;
  back: () => void;
  next: () => void;
}) {
  const info = props.choice.info!;
  const parts = info.disks.flatMap((d) => d.partitions.filter((p) => p.number > 0));
  const whole = info.kind !== 'partition';
  return html`<section>
    <${StepHeading}>What should be restored?</${StepHeading}>
    <fieldset class="choices"><legend class="sr-only">What</legend>
      ${
        whole
          ? html`<label class="choice">
            <input type="radio" name="what" checked=${props.choice.partition === undefined} onChange=${() => props.set({ partition: undefined })} />
            <span><strong>The whole ${info.kind === 'system' ? 'system' : 'disk'}</strong> — ${info.disks.map((d) => `${bytes(d.source.size)}, ${d.partitions.length} partition${d.partitions.length === 1 ? '' : 's'}`).join('; ')}</span>
          </label>`
          : null
      }
      ${parts.map(
        (p) => html`<label class="choice">
          <input type="radio" name="what" checked=${props.choice.partition === p.number} onChange=${() => props.set({ partition: p.number })} />
          <span><strong>Only partition ${p.number}</strong> — ${bytes(p.size)} ${p.fs ?? ''}${p.label ? ` “${p.label}”` : ''}${p.usedBytes !== null ? `, ${bytes(p.usedBytes)} used` : ''}</span>
        </label>`,
      )}
    </fieldset>
    <${Nav} back=${props.back} next=${props.next} />
  </section>`;
}

function ChooseTarget(props: {
  choice: Choice;
  set: (c: Partial<Choice>) => void;
  back: () => void;
  next: () => void;
}) {
  const { disks, error } = useDisks();
  const c = props.choice;
  const sourcePaths = new Set(c.chain?.points.map((p) => p.path));
  return html`<section>
    <${StepHeading}>Where to?</${StepHeading}>
    <p>Choose the disk to restore to. <strong>What is on it now will be replaced.</strong></p>
    <${ErrorBox} error=${error} />
    ${
      disks === null
        ? html`<p>Looking for disks…</p>`
        : html`<fieldset class="choices"><legend class="sr-only">Target disks</legend>${disks.map((d) => {
            const busy = d.inUse || sourcePaths.has(d.path);
            return html`<label class=${`choice${busy ? ' disabled' : ''}`}>
            <input type="radio" name="target" disabled=${busy} checked=${c.target === d.path}
              onChange=${() => props.set({ target: d.path, targetDisk: d, targetPartition: undefined })} />
            <${DiskCard} disk=${d}>
              ${
                c.target === d.path && c.partition !== undefined && d.partitions.length > 0
                  ? html`<label class="inline">Put it
                    <select onChange=${(e: Event) => {
                      const v = (e.target as HTMLSelectElement).value;
                      props.set({ targetPartition: v === '' ? undefined : Number(v) });
                    }}>
                      <option value="" selected=${c.targetPartition === undefined}>over the whole disk</option>
                      ${d.partitions.map((p) => html`<option value=${p.number} selected=${c.targetPartition === p.number}>into partition ${p.number} (${bytes(p.size)} ${p.fs?.type ?? ''})</option>`)}
                    </select></label>`
                  : null
              }
            </${DiskCard}>
          </label>`;
          })}</fieldset>`
    }
    <${Nav} back=${props.back} next=${props.next} nextDisabled=${!c.target} />
  </section>`;
}

function ChooseOptions(props: {
  choice: Choice;
  set: (c: Partial<Choice>) => void;
  back: () => void;
  next: () => void;
}) {
  const c = props.choice;
  const wholeDisk = c.partition === undefined;
  return html`<section>
    <${StepHeading}>How?</${StepHeading}>
    ${
      wholeDisk
        ? html`<fieldset class="choices"><legend>Partitions on the target</legend>
          ${(
            [
              ['copy', 'Copy them as they are', 'Same sizes and places as on the backed-up disk.'],
              [
                'fill',
                'Use the whole target disk',
                'Partitions grow in proportion and their filesystems are enlarged.',
              ],
              ['shrink', 'Fit onto a smaller disk', 'Filesystems are shrunk to fit, when the data fits.'],
            ] as const
          ).map(
            ([mode, title, text]) => html`<label class="choice">
              <input type="radio" name="edit" checked=${c.edit === mode} onChange=${() => props.set({ edit: mode })} />
              <span><strong>${title}</strong><br />${text}</span>
            </label>`,
          )}
        </fieldset>`
        : null
    }
    <label class="check"><input type="checkbox" checked=${c.align} onChange=${(e: Event) => props.set({ align: (e.target as HTMLInputElement).checked })} /> Align partitions to 1 MiB (SSD alignment)</label>
    <label class="check"><input type="checkbox" checked=${c.sectorBySector} onChange=${(e: Event) => props.set({ sectorBySector: (e.target as HTMLInputElement).checked })} /> Sector by sector (also the unused space; slower)</label>
    <label class="check disabled"><input type="checkbox" disabled /> Universal restore (different hardware) — not available in this version</label>
    <${Nav} back=${props.back} next=${props.next} />
  </section>`;
}

function Confirm(props: { choice: Choice; back: () => void; started: (job: Job) => void }) {
  const c = props.choice;
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const info = c.info!;
  const point = info.chain.find((p) => p.sequence === info.sequence);
  const what = `${c.partition === undefined ? `the whole ${info.kind === 'system' ? 'system' : 'disk'}` : `partition ${c.partition}`} from the backup of ${point ? when(point.created) : info.created} will be written to ${c.target}${
    c.targetPartition !== undefined ? ` partition ${c.targetPartition}` : ''
  }.`;
  const start = async (word: string) => {
    setBusy(true);
    setError(null);
    try {
      const edit =
        c.partition === undefined && (c.edit !== 'copy' || c.align)
          ? { mode: c.edit, align: c.align }
          : undefined;
      const r = await api.post<{ job: Job }>('/api/jobs', {
        kind: 'restore',
        image: info.path,
        password: c.password,
        target: c.target,
        targetPartition: c.targetPartition,
        partition: c.partition,
        sectorBySector: c.sectorBySector || undefined,
        edit,
        confirm: word,
      });
      props.started(r.job);
    } catch (e) {
      setError(e as ApiError);
      setBusy(false);
    }
  };
  return html`<section>
    <${StepHeading}>Check and confirm</${StepHeading}>
    <${TypedConfirm} disk=${c.targetDisk ?? null} target=${c.target!} what=${what} busy=${busy} onConfirm=${start} />
    <${ErrorBox} error=${error} title="The restore did not start" />
    <${Nav} back=${props.back} />
  </section>`;
}

export function RestoreWizard() {
  const [step, setStep] = useState(0);
  const [choice, setChoice] = useState<Choice>({ edit: 'copy', align: false, sectorBySector: false });
  const [jobId, setJobId] = useState<string | null>(null);
  const set = (c: Partial<Choice>) => setChoice((old) => ({ ...old, ...c }));
  const next = () => setStep((s) => s + 1);
  const back = () => setStep((s) => Math.max(0, s - 1));
  const body = [
    () => html`<${ChooseImage} choice=${choice} set=${set} next=${next} />`,
    () => html`<${ChoosePoint} choice=${choice} set=${set} back=${back} next=${next} />`,
    () => html`<${ChooseWhat} choice=${choice} set=${set} back=${back} next=${next} />`,
    () => html`<${ChooseTarget} choice=${choice} set=${set} back=${back} next=${next} />`,
    () => html`<${ChooseOptions} choice=${choice} set=${set} back=${back} next=${next} />`,
    () =>
      html`<${Confirm} choice=${choice} back=${back} started=${(j: Job) => {
        setJobId(j.id);
        setStep(6);
      }} />`,
    () =>
      jobId
        ? html`<${RunningStep} id=${jobId} noun="Restore" doneText="The disk has been restored. Remove the rescue media and start the computer from that disk." />`
        : null,
  ][step];
  return html`<main>
    <h1 class="sr-only">Restore</h1>
    <${Steps} steps=${STEPS} current=${step} />
    ${body()}
  </main>`;
}
