/**
 * rescue media iso --out FILE [--cache DIR] [--binary FILE] [--fast] [--timeout S] [--keep-work]
 * rescue media usb --device DEV --iso FILE [--force] [--json] --yes
 * rescue media pxe --out DIR (--iso FILE | [the media iso options])
 *
 * The rescue system's media: the bootable hybrid ISO (built from Debian packages, from a checkout),
 * a USB stick written from it and read back, and the files a PXE server hands out.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { RescueError } from '../../engine/errors.ts';
import { parseCommand } from '../args.ts';
import { confirmTyped } from '../confirm.ts';
import { formatBytes, UsageError } from '../output.ts';

const ISO_OPTIONS = {
  out: { type: 'string' },
  cache: { type: 'string' },
  binary: { type: 'string' },
  fast: { type: 'boolean' },
  timeout: { type: 'string' },
  'keep-work': { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

const PXE_OPTIONS = { ...ISO_OPTIONS, iso: { type: 'string' } } as const;

const USB_OPTIONS = {
  device: { type: 'string' },
  iso: { type: 'string' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

/** The ISO builder needs the checkout's iso-builder/files and Debian's apt: not inside the binary. */
async function builder() {
  const sea = await import('node:sea').catch(() => undefined);
  const inBinary = sea?.isSea() ?? false;
  if (inBinary || !existsSync(new URL('../../../iso-builder/files/initrd/init', import.meta.url)))
    throw new RescueError(
      'E_MEDIA_NEEDS_CHECKOUT',
      'the ISO is built from a checkout of Rescue (its boot scripts and Debian package list are not in this binary)',
      'Run it from a checkout on Debian 12: npm run --silent rescue -- media iso --out FILE',
    );
  return import('../../../iso-builder/build.ts');
}

/** The ISO build `media iso` runs, and `media pxe` when it is given no --iso. */
async function buildFromOptions(
  v: { cache?: string; binary?: string; fast?: boolean; timeout?: string; 'keep-work'?: boolean },
  out: string,
) {
  const { buildRescueIso } = await builder();
  return buildRescueIso({
    out,
    cache: v.cache,
    binary: v.binary,
    compression: v.fast ? 'zstd' : 'xz',
    timeout: timeoutOption(v.timeout),
    keepWork: v['keep-work'],
    log: (line) => process.stderr.write(`rescue: ${line}\n`),
  });
}

function say(json: boolean | undefined, text: string, record: Record<string, unknown>): void {
  process.stdout.write(json ? `${JSON.stringify(record)}\n` : `${text}\n`);
}

async function isoCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand(argv, ISO_OPTIONS);
  if (positionals.length > 0) throw new UsageError(`rescue media iso takes no ${positionals[0]}`);
  if (!v.out) throw new UsageError('say where the ISO goes: rescue media iso --out FILE');
  const r = await buildFromOptions(v, v.out);
  say(
    v.json,
    `${r.iso}: ${formatBytes(r.bytes)} (rescue root ${formatBytes(r.parts.squashfs)} packed from ${formatBytes(r.parts.rootUnpacked)}, ` +
      `kernel ${r.kernelVersion} ${formatBytes(r.parts.kernel)}, initrd ${formatBytes(r.parts.initrd)}), build ${r.id}, ` +
      `${r.seconds.total.toFixed(0)} s\nmanifest: ${r.manifest}`,
    { type: 'iso', ...r },
  );
  return 0;
}

function timeoutOption(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) > 600) throw new UsageError('--timeout takes seconds (0-600)');
  return Number(text);
}

async function usbCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const { values: v, positionals } = parseCommand(argv, USB_OPTIONS);
  if (positionals.length > 0) throw new UsageError(`rescue media usb takes no ${positionals[0]}`);
  if (!v.device) throw new UsageError('say which stick: rescue media usb --device /dev/sdX --iso FILE');
  if (!v.iso)
    throw new UsageError(
      'say which ISO: rescue media usb --device DEV --iso FILE (rescue media iso makes one)',
    );
  const { assertIso, checkUsbTarget, writeIso } = await import('../../../iso-builder/usb.ts');
  const bytes = await assertIso(v.iso);
  const target = await checkUsbTarget(v.device, bytes, v.force ?? false);
  await confirmTyped(
    `Writing ${basename(v.iso)} (${formatBytes(bytes)}) to ${v.device}: ${target.description}.\n` +
      'Everything on this stick is lost.',
    basename(v.device),
    { yes: v.yes, no: v.no, json: v.json },
  );
  let last = 0;
  const r = await writeIso({
    iso: v.iso,
    device: v.device,
    signal,
    onProgress: (p) => {
      const now = Date.now();
      if (now - last < 1000 && p.done < p.total) return;
      last = now;
      process.stderr.write(
        v.json
          ? `${JSON.stringify({ type: 'progress', ...p })}\n`
          : `${p.phase === 'write' ? 'writing' : 'reading back'} ${Math.floor((100 * p.done) / p.total)} % (${formatBytes(p.rate)}/s)\n`,
      );
    },
  });
  say(
    v.json,
    `${v.device}: written and read back identical (${formatBytes(r.bytes)}, sha256 ${r.sha256.slice(0, 16)}…; ` +
      `write ${r.writeSeconds.toFixed(1)} s, verify ${r.verifySeconds.toFixed(1)} s). The stick can be unplugged.`,
    { type: 'usb', device: v.device, ...r },
  );
  return 0;
}

async function pxeCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand(argv, PXE_OPTIONS);
  if (positionals.length > 0) throw new UsageError(`rescue media pxe takes no ${positionals[0]}`);
  if (!v.out) throw new UsageError('say where the files go: rescue media pxe --out DIR [--iso FILE]');
  const { pxeFromIso } = await import('../../../iso-builder/pxe.ts');
  let iso = v.iso;
  let scratch: string | undefined;
  try {
    if (!iso) {
      scratch = mkdtempSync(join(resolve(v.out, '..'), '.rescue-pxe-'));
      iso = join(scratch, 'rescue.iso');
      await buildFromOptions(v, iso);
    }
    const r = await pxeFromIso(iso, resolve(v.out));
    say(
      v.json,
      `${r.dir}: ${Object.entries(r.files)
        .map(([f, n]) => `${f} ${formatBytes(n)}`)
        .join(', ')} (build ${r.id}). Point iPXE at boot.ipxe in this folder.`,
      { type: 'pxe', ...r },
    );
    return 0;
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

export async function mediaCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const [kind, ...rest] = argv;
  if (kind === 'iso') return isoCommand(rest);
  if (kind === 'usb') return usbCommand(rest, signal);
  if (kind === 'pxe') return pxeCommand(rest);
  throw new UsageError('say which medium: rescue media iso|usb|pxe');
}
