/**
 * Issue #7's boot-time goal: power-on → the rescue system reporting in over PXE, with the kernel and
 * initrds loaded over HTTP (what `rescue pxe serve` does) against TFTP only (`--transfer tftp`), in the
 * same run, same machine, same files (goal: HTTP ≥ 3× faster).
 *
 *   node bench/pxe-boot.ts [--repeat N] [--firmware bios|uefi]     (or npm run bench:pxe; root)
 *
 * A diskless qemu machine (SeaBIOS with the NIC's iPXE ROM, or OVMF's own PXE → snponly.efi) on a
 * boot LAN of network namespaces (test/fixtures/pxe-net.ts) boots the checkout's test ISO's PXE files;
 * the time is from qemu's start until the clients page shows the machine at stage "rescue". qemu
 * runs under TCG here (nested KVM cannot boot Linux on these machines), which slows the CPU-bound
 * part of the boot as much for both; the transfer is what differs. Also printed: the load phase alone
 * (kernel requested → rescue root fully sent, from the server's trace).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeBootLan, pairedCurl, pxeServe } from '../test/fixtures/pxe-net.ts';
import { testIso, testPxeFiles, VM_CACHE } from '../test/vm/fixtures.ts';
import { Vm } from '../test/vm/qemu.ts';

const { values } = parseArgs({ options: { repeat: { type: 'string' }, firmware: { type: 'string' } } });
const REPEAT = Number(values.repeat ?? 1);
const FIRMWARE = values.firmware === 'uefi' ? 'uefi' : 'bios';
const GOAL = 3;

interface Client {
  mac: string;
  stage: string;
  trace: { at: string; text: string }[];
}

const dir = join(VM_CACHE, `bench-pxe-${process.pid}`);
mkdirSync(dir, { recursive: true });
const log = (l: string) => process.stderr.write(`${l}\n`);
const iso = (await testIso(log)).iso;
const files = await testPxeFiles(iso);
const lan = await makeBootLan('pxb');

async function bootOnce(transfer: 'http' | 'tftp', n: number): Promise<{ total: number; load: number }> {
  const server = await pxeServe(lan, [
    '--full-dhcp',
    '--range',
    '192.0.2.100-192.0.2.120',
    '--boot-files',
    files,
    '--state',
    join(dir, `state-${transfer}-${n}`),
    '--menu',
    '0',
    '--probe-seconds',
    '0',
    '--transfer',
    transfer,
    '--kernel-args',
    'console=ttyS0,115200 quiet rescue.nokiosk',
  ]);
  const mac = `52:54:00:00:0b:${(transfer === 'http' ? 0x10 : 0x20) + n}`;
  const vm = new Vm({
    firmware: FIRMWARE,
    vga: 'none',
    memoryMiB: 1536,
    tap: {
      netns: lan.client,
      ifname: 'tap0',
      mac,
      romfile: FIRMWARE === 'uefi' ? '' : undefined,
      boot: true,
    },
  });
  try {
    const t0 = Date.now();
    await vm.start();
    const get = await pairedCurl(lan, dir, server.pin);
    for (;;) {
      if (Date.now() - t0 > 1_800_000) throw new Error(`${transfer}: no report within 30 min`);
      const { clients } = (await get('/api/pxe/clients')) as { clients: Client[] };
      const c = clients.find((x) => x.mac === mac);
      if (c && (c.stage === 'rescue' || c.stage === 'job')) {
        const total = (Date.now() - t0) / 1000;
        const at = (re: RegExp) => c.trace.find((t) => re.test(t.text))?.at;
        const first = at(transfer === 'http' ? /HTTP \/pxe\/files\/vmlinuz/ : /TFTP \/?vmlinuz: sending/);
        const end = at(
          transfer === 'http'
            ? /HTTP \/pxe\/files\/rescue-root\.cpio: sent/
            : /TFTP \/?rescue-root\.cpio: sent/,
        );
        const load = first && end ? (Date.parse(end) - Date.parse(first)) / 1000 : Number.NaN;
        return { total, load };
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await vm.stop();
    await server.stop();
  }
}

try {
  const best = { http: { total: Infinity, load: Infinity }, tftp: { total: Infinity, load: Infinity } };
  for (let n = 0; n < REPEAT; n++) {
    for (const transfer of ['http', 'tftp'] as const) {
      const r = await bootOnce(transfer, n);
      log(
        `${transfer} run ${n + 1}: power-on → rescue up ${r.total.toFixed(1)} s (load phase ${r.load.toFixed(1)} s)`,
      );
      if (r.total < best[transfer].total) best[transfer] = r;
    }
  }
  const ratio = best.tftp.total / best.http.total;
  const loadRatio = best.tftp.load / best.http.load;
  process.stdout.write(
    [
      `PXE boot (${FIRMWARE === 'bios' ? 'SeaBIOS + iPXE ROM' : 'OVMF PXE → snponly.efi'}, TCG), power-on → rescue system reported in, best of ${REPEAT}:`,
      `  HTTP  ${best.http.total.toFixed(1)} s (kernel + initrds loaded in ${best.http.load.toFixed(1)} s)`,
      `  TFTP  ${best.tftp.total.toFixed(1)} s (kernel + initrds loaded in ${best.tftp.load.toFixed(1)} s)`,
      `  HTTP is ${ratio.toFixed(2)}× faster overall, ${loadRatio.toFixed(1)}× in the load phase (goal ≥ ${GOAL}× overall): ${ratio >= GOAL ? 'met' : 'NOT met'}`,
      '',
    ].join('\n'),
  );
} finally {
  await lan.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
