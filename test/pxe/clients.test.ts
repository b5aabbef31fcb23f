/** The clients page's bookkeeping: stages, problems, and which machine an address belongs to. */

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ClientTracker, macFromNeighbours } from '../../pxe/clients.ts';
import { makeTempDir } from '../fixtures/lab.ts';

const MAC = '52:54:00:00:00:01';

function tracker(neighbours: Record<string, string> = {}) {
  return new ClientTracker({ neighbours: async (ip) => neighbours[ip] });
}

describe('ClientTracker', () => {
  it('follows one machine from firmware DHCP to a job, and back to DHCP when it boots again', async () => {
    const t = tracker({ '192.0.2.7': MAC });
    t.dhcp({
      mac: MAC,
      arch: 7,
      ipxe: false,
      pxe: true,
      trace: ['arch 7 (UEFI x64)', 'snponly.efi (TFTP)', 'OFFER'],
    });
    expect(t.list()[0]).toMatchObject({ mac: MAC, firmware: 'UEFI x64', stage: 'dhcp' });
    // Found by its address through the neighbour table.
    await t.tftp({
      ip: '192.0.2.7',
      file: 'snponly.efi',
      type: 'error',
      reason: 'the client gave up: x (code 8)',
    });
    expect(t.list()[0].problem).toBeUndefined();
    await t.tftp({ ip: '192.0.2.7', file: 'snponly.efi', type: 'done', bytes: 1000, ms: 20 });
    expect(t.list()[0].stage).toBe('tftp');
    t.dhcp({ mac: MAC, arch: 7, ipxe: true, pxe: true, ip: '192.0.2.7', trace: ['iPXE'] });
    await t.http({ ip: '192.0.2.7', path: '/pxe/files/vmlinuz', status: 200, bytes: 5 });
    await t.hello({ ip: '192.0.2.7', mac: MAC, url: 'http://192.0.2.7/' });
    expect(t.list()[0]).toMatchObject({ stage: 'rescue', rescueUrl: 'http://192.0.2.7/' });
    // The rescue system's own DHCP client renewing its lease changes nothing.
    t.dhcp({ mac: MAC, ipxe: false, pxe: false, ip: '192.0.2.7', trace: ['ACK'] });
    expect(t.list()[0].stage).toBe('rescue');
    await t.hello({
      ip: '192.0.2.7',
      mac: MAC,
      job: { id: 'a', kind: 'restore', state: 'running', percent: 10 },
    });
    expect(t.list()[0]).toMatchObject({ stage: 'job', job: { percent: 10 } });
    // Firmware asking again: a new boot.
    t.dhcp({ mac: MAC, arch: 7, ipxe: false, pxe: true, trace: ['OFFER'] });
    expect(t.list()[0]).toMatchObject({ stage: 'dhcp' });
    expect(t.list()[0].job).toBeUndefined();
  });

  it('keeps the last problem until something works, and a bounded trace', async () => {
    const t = tracker();
    t.dhcp({ mac: MAC, ipxe: false, pxe: true, ip: '192.0.2.8', trace: ['OFFER'] });
    expect(t.list()[0].firmware).toBe('BIOS');
    await t.tftp({
      ip: '192.0.2.8',
      file: 'undionly.kpxe',
      type: 'error',
      reason: '"undionly.kpxe" not found',
    });
    expect(t.list()[0].problem).toBe('TFTP undionly.kpxe: "undionly.kpxe" not found');
    await t.http({ ip: '192.0.2.8', path: '/pxe/files/x', status: 404 });
    expect(t.list()[0].problem).toBe('HTTP /pxe/files/x: 404');
    for (let i = 0; i < 100; i++) await t.http({ ip: '192.0.2.8', path: '/pxe/boot.ipxe', status: 200 });
    expect(t.list()[0].trace.length).toBe(40);
    // An address nobody is known by becomes its own entry, not someone else's.
    await t.http({ ip: '192.0.2.99', path: '/pxe/boot.ipxe', status: 200 });
    expect(
      t
        .list()
        .map((c) => c.mac)
        .sort(),
    ).toEqual([MAC, 'ip:192.0.2.99']);
  });

  it('reads the kernel neighbour table', async () => {
    const dir = await makeTempDir('rescue-arp-');
    const table = join(dir, 'arp');
    await fsp.writeFile(
      table,
      'IP address       HW type     Flags       HW address            Mask     Device\n' +
        '192.0.2.5        0x1         0x2         52:54:00:AB:CD:EF     *        br0\n' +
        '192.0.2.6        0x1         0x0         00:00:00:00:00:00     *        br0\n',
    );
    expect(await macFromNeighbours('192.0.2.5', table)).toBe('52:54:00:ab:cd:ef');
    expect(await macFromNeighbours('192.0.2.6', table)).toBeUndefined();
    expect(await macFromNeighbours('192.0.2.9', table)).toBeUndefined();
    await fsp.rm(dir, { recursive: true, force: true });
  });
});
