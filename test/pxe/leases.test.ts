/** The full-DHCP address pool: ranges checked against the network, offers, binds, declines, expiry, the lease file. */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseTable, parseRange, prefixToMask } from '../../pxe/dhcp/leases.ts';
import { makeTempDir } from '../fixtures/lab.ts';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('rescue-leases-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const subnet = { serverIp: '192.0.2.1', prefix: 24 };

describe('parseRange', () => {
  it('accepts a range inside the network and counts it without the server', () => {
    expect(parseRange('192.0.2.1-192.0.2.10', subnet).size).toBe(9);
    expect(parseRange(' 192.0.2.100 - 192.0.2.199 ', subnet).size).toBe(100);
    expect(prefixToMask(24)).toBe('255.255.255.0');
    expect(prefixToMask(20)).toBe('255.255.240.0');
  });
  it.each([
    ['192.0.2.10', /not a range/],
    ['192.0.2.20-192.0.2.10', /comes before/],
    ['192.0.3.1-192.0.3.9', /not inside this interface's network 192\.0\.2\.0\/24/],
    ['192.0.2.0-192.0.2.9', /network or broadcast/],
    ['192.0.2.250-192.0.2.255', /network or broadcast/],
    ['192.0.2.1-192.0.2.1', /holds no address but this server's own/],
    ['192.0.2.300-192.0.2.301', /not an IPv4 address/],
  ])('refuses %s', (range, why) => {
    expect(() => parseRange(range, subnet)).toThrow(why);
  });
});

describe('LeaseTable', () => {
  const table = (
    file: string,
    probe: (ip: string) => Promise<boolean> = async () => false,
    now = () => Date.now(),
  ) => new LeaseTable({ range: '192.0.2.1-192.0.2.4', subnet, file, probe, now });

  it('offers free addresses in order, skips ones that answer, runs out cleanly', async () => {
    const t = table(join(dir, 'a.json'), async (ip) => ip === '192.0.2.3');
    expect(await t.offer('aa:00:00:00:00:01')).toBe('192.0.2.2');
    expect(await t.offer('aa:00:00:00:00:01')).toBe('192.0.2.2'); // same client, same address
    expect(await t.offer('aa:00:00:00:00:02')).toBe('192.0.2.4');
    expect(await t.offer('aa:00:00:00:00:03')).toBeUndefined(); // .3 answered ping
  });

  it('binds what a client asks for when free, refuses another client’s, keeps leases across a restart', async () => {
    const file = join(dir, 'b.json');
    const t = table(file);
    expect(await t.offer('aa:00:00:00:00:01', '192.0.2.4')).toBe('192.0.2.4');
    expect(await t.bind('aa:00:00:00:00:01', '192.0.2.4', 'pc-1')).toMatchObject({
      ip: '192.0.2.4',
      state: 'bound',
    });
    expect(await t.bind('aa:00:00:00:00:02', '192.0.2.4')).toBeUndefined();
    expect(await t.bind('aa:00:00:00:00:02', '192.0.2.99')).toBeUndefined(); // outside the range
    const again = table(file);
    await again.load();
    expect(again.leaseOf('aa:00:00:00:00:01')).toMatchObject({ ip: '192.0.2.4', hostname: 'pc-1' });
    expect(await again.offer('aa:00:00:00:00:01')).toBe('192.0.2.4');
    await again.release('aa:00:00:00:00:01', '192.0.2.4');
    expect(JSON.parse(await fsp.readFile(file, 'utf8'))).toEqual([]);
  });

  it('sets a declined address aside, and reuses expired leases', async () => {
    let clock = 1_000_000;
    const t = table(
      join(dir, 'c.json'),
      async () => false,
      () => clock,
    );
    expect(await t.offer('aa:00:00:00:00:01')).toBe('192.0.2.2');
    await t.decline('aa:00:00:00:00:01', '192.0.2.2');
    expect(await t.offer('aa:00:00:00:00:01')).toBe('192.0.2.3');
    await t.bind('aa:00:00:00:00:01', '192.0.2.3');
    clock += 3600_000 + 11 * 60_000; // lease and the decline hold both over
    expect(await t.offer('aa:00:00:00:00:02')).toBe('192.0.2.2');
    expect(await t.offer('aa:00:00:00:00:03', '192.0.2.3')).toBe('192.0.2.3');
  });

  it('says so when the lease file is damaged', async () => {
    const file = join(dir, 'd.json');
    await fsp.writeFile(file, '{not json');
    await expect(table(file).load()).rejects.toThrow(/lease file .* is damaged/);
  });
});
