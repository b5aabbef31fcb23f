/**
 * `rescue media iso`: Debian packages (cached) + the `rescue` binary → rescue root (squashfs) +
 * initrd + hybrid ISO, with a manifest of every input beside the ISO and inside it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../rescue/engine/errors.ts';
import { buildInitrd } from './initrd.ts';
import { buildIso } from './iso.ts';
import {
  BOOT_PACKAGES,
  type Deb,
  fetchPackages,
  fileSha256,
  manifestText,
  ROOT_PACKAGES,
} from './packages.ts';
import { assembleRoot } from './rootfs.ts';

const run = promisify(execFile);
const here = import.meta.dirname;
const CHECKOUT = resolve(here, '..');

export interface IsoBuildOptions {
  out: string;
  /** Where downloaded .debs are kept between builds (default: .cache/iso-debs in the checkout). */
  cache?: string;
  /** Scratch space (default: a folder beside the output, removed afterwards unless keepWork). */
  work?: string;
  keepWork?: boolean;
  /** The rescue binary to put in (default: built now with build/sea.ts). */
  binary?: string;
  /** Seconds the boot menu waits (default 5). */
  timeout?: number;
  /** squashfs compression: xz (smallest, default) or zstd (faster to build). */
  compression?: 'xz' | 'zstd';
  log?: (line: string) => void;
}

export interface IsoBuildResult {
  iso: string;
  manifest: string;
  id: string;
  kernelVersion: string;
  bytes: number;
  parts: { squashfs: number; initrd: number; kernel: number; rootUnpacked: number };
  seconds: Record<string, number>;
  /** Kernel, initrd and root for `rescue media pxe` (kept in the work folder when keepWork). */
  files: { vmlinuz: string; initrd: string; squashfs: string };
}

async function version(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args);
    return (
      `${r.stdout}${r.stderr}`
        .split('\n')
        .find((l) => l.trim())
        ?.trim() ?? '?'
    );
  } catch {
    return 'not installed';
  }
}

async function duBytes(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-sb', dir]);
  return Number(stdout.split(/\s/)[0]);
}

/** The rescue binary from this checkout, built now (a few seconds). */
export async function buildBinary(log: (l: string) => void): Promise<string> {
  const out = join(CHECKOUT, 'dist', 'rescue');
  log('building the rescue binary (npm run build)');
  await run(process.execPath, [join(CHECKOUT, 'build/sea.ts'), '--out', out], { maxBuffer: 16 << 20 });
  return out;
}

export async function buildRescueIso(o: IsoBuildOptions): Promise<IsoBuildResult> {
  const log = o.log ?? (() => {});
  const t0 = Date.now();
  const seconds: Record<string, number> = {};
  let mark = Date.now();
  const lap = (name: string) => {
    seconds[name] = (Date.now() - mark) / 1000;
    mark = Date.now();
  };
  if (process.getuid?.() !== 0)
    throw new RescueError(
      'E_ISO_BUILD',
      'building the ISO needs root (the rescue root keeps root-owned files and device settings)',
      'Run it as root.',
    );
  const out = resolve(o.out);
  if (!existsSync(dirname(out)))
    throw new RescueError(
      'E_ISO_BUILD',
      `the folder of ${out} does not exist`,
      'Create it or choose another --out.',
    );
  const cache = resolve(o.cache ?? join(CHECKOUT, '.cache', 'iso-debs'));
  const work = resolve(o.work ?? join(dirname(out), `.rescue-iso-work-${process.pid}`));
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const binary = o.binary ? resolve(o.binary) : await buildBinary(log);
    if (!existsSync(binary))
      throw new RescueError('E_ISO_BUILD', `no rescue binary at ${binary}`, 'Run npm run build first.');
    lap('binary');

    log(`resolving and fetching packages (cache: ${cache})`);
    const rootDebs = await fetchPackages(ROOT_PACKAGES, cache, log);
    const bootDebs = await fetchPackages(BOOT_PACKAGES, cache, log);
    lap('packages');

    const release = (await run(binary, ['--version'])).stdout.trim().replace(/^rescue /, '');
    const root = join(work, 'root');
    const { kernelVersion, vmlinuz } = await assembleRoot({
      debs: rootDebs,
      root,
      overlay: join(here, 'files/root'),
      binary,
      release,
      log,
    });
    const rootUnpacked = await duBytes(root);
    lap('root');

    const bootDir = join(work, 'boot-packages');
    mkdirSync(bootDir);
    const wanted = new Set([
      'shim-signed',
      'shim-helpers-amd64-signed',
      'grub-efi-amd64-signed',
      'grub-pc-bin',
      'grub-common',
    ]);
    for (const d of bootDebs.filter((b) => wanted.has(b.name)))
      await run('dpkg-deb', ['-x', d.file, bootDir]);

    const initrd = join(work, 'initrd.img');
    await buildInitrd({ root, kernelVersion, init: join(here, 'files/initrd/init'), work, out: initrd });
    lap('initrd');

    const binarySha = await fileSha256(binary);
    const used = (debs: Deb[], names?: Set<string>) => debs.filter((d) => !names || names.has(d.name));
    const manifest = manifestText({ root: used(rootDebs), boot: used(bootDebs, wanted) }, [
      `rescue ${release} binary sha256:${binarySha}`,
      `kernel ${kernelVersion}`,
      `built with ${await version('xorriso', ['-version'])}; ${await version('mksquashfs', ['-version'])}`,
    ]);
    const id = createHash('sha256').update(manifest).digest('hex').slice(0, 12);
    const manifestFile = join(work, 'manifest.txt');
    writeFileSync(manifestFile, manifest);

    const squashfs = join(work, 'root.sqfs');
    const comp = o.compression ?? 'xz';
    log(`packing the root (${(rootUnpacked / 1e6).toFixed(0)} MB) into squashfs with ${comp}`);
    const epoch = process.env.SOURCE_DATE_EPOCH ?? '1700000000';
    await run(
      'mksquashfs',
      [
        root,
        squashfs,
        '-noappend',
        '-quiet',
        '-no-progress',
        '-all-root',
        '-b',
        '1M',
        '-comp',
        comp,
        ...(comp === 'xz' ? ['-Xbcj', 'x86'] : ['-Xcompression-level', '19']),
        '-mkfs-time',
        epoch,
        '-all-time',
        epoch,
      ],
      { maxBuffer: 64 << 20 },
    ).catch((e: { stderr?: string }) => {
      throw new RescueError(
        'E_ISO_BUILD',
        `mksquashfs failed: ${String(e.stderr ?? e).trim()}`,
        'Check the free space of the output folder.',
      );
    });
    lap('squashfs');

    log('writing the ISO');
    await buildIso({
      stage: join(work, 'iso'),
      work,
      boot: { dir: bootDir },
      vmlinuz,
      initrd,
      squashfs,
      manifest: manifestFile,
      id,
      release,
      timeout: o.timeout ?? 5,
      out,
    });
    const stagedRoot = join(work, 'iso', 'rescue', 'root.sqfs');
    const manifestOut = `${out}.manifest.txt`;
    writeFileSync(manifestOut, manifest);
    lap('iso');
    seconds.total = (Date.now() - t0) / 1000;
    return {
      iso: out,
      manifest: manifestOut,
      id,
      kernelVersion,
      bytes: statSync(out).size,
      parts: {
        squashfs: statSync(stagedRoot).size,
        initrd: statSync(initrd).size,
        kernel: statSync(vmlinuz).size,
        rootUnpacked,
      },
      seconds,
      files: { vmlinuz, initrd, squashfs: stagedRoot },
    };
  } finally {
    if (!o.keepWork) rmSync(work, { recursive: true, force: true });
  }
}
