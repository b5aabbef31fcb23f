/**
 * `rescue pxe serve` on a boot LAN of network namespaces, against real DHCP clients: busybox
 * udhcpc and ISC dhclient get addresses in full mode (lease file, conflict check by ping), get
 * nothing from it in proxy mode beside a plain dnsmasq acting as the router's DHCP server (which the
 * PXE server notices), malformed packets are ignored, and another network of the same host is not
 * served. The HTTP boot routes are fetched with curl (Range included).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../fixtures/lab.ts';
import {
  type BackgroundProcess,
  type BootLan,
  fakeBootFiles,
  makeBootLan,
  PXE_SERVER_IP,
  pairedCurl,
  pxeServe,
  ROUTER_IP,
  routerDhcp,
} from '../fixtures/pxe-net.ts';

let lan: BootLan;
let dir: string;
let bootFiles: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-pxe-');
  bootFiles = await fakeBootFiles(join(dir, 'boot'));
  lan = await makeBootLan('pxs');
  await fsp.writeFile(
    join(dir, 'udhcpc.sh'),
    `#!/bin/sh\necho "$1 ip=$ip mask=$subnet router=$router serverid=$serverid boot_file=$boot_file" >> "${dir}/udhcpc-$interface.log"\n`,
    { mode: 0o755 },
  );
});

afterAll(async () => {
  await lan?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** busybox udhcpc once on `dev`: the address it was given, or undefined. */
async function udhcpc(dev: string, extra: string[] = []): Promise<{ ip?: string; log: string }> {
  const log = join(dir, `udhcpc-${dev}.log`);
  await fsp.rm(log, { force: true });
  const r = await lan.exec(
    lan.client,
    'busybox',
    [
      'udhcpc',
      '-i',
      dev,
      '-f',
      '-q',
      '-n',
      '-t',
      '3',
      '-T',
      '2',
      '-A',
      '1',
      '-s',
      join(dir, 'udhcpc.sh'),
      ...extra,
    ],
    { allowFail: true },
  );
  const text = await fsp.readFile(log, 'utf8').catch(() => '');
  const ip = /^bound ip=(\S+)/m.exec(text)?.[1];
  return { ip, log: `${r.stdout}${r.stderr}${text}` };
}

async function dhclient(dev: string): Promise<{ ip?: string; log: string }> {
  const leases = join(dir, `dhclient-${dev}.leases`);
  const conf = join(dir, 'dhclient.conf');
  await fsp.writeFile(conf, 'timeout 20;\nretry 1;\n');
  await fsp.rm(leases, { force: true });
  const r = await lan.exec(
    lan.client,
    'dhclient',
    [
      '-1',
      '-v',
      '-cf',
      conf,
      '-lf',
      leases,
      '-pf',
      join(dir, `dhclient-${dev}.pid`),
      '-sf',
      '/bin/true',
      dev,
    ],
    { allowFail: true },
  );
  // Once it has a lease dhclient stays in the background to renew it: stopped here.
  await lan.exec(
    lan.client,
    'dhclient',
    ['-x', '-pf', join(dir, `dhclient-${dev}.pid`), '-lf', leases, dev],
    {
      allowFail: true,
    },
  );
  const text = await fsp.readFile(leases, 'utf8').catch(() => '');
  return { ip: /fixed-address (\S+);/.exec(text)?.[1], log: `${r.stdout}${r.stderr}${text}` };
}

describe('full DHCP', () => {
  let server: BackgroundProcess & { pin: string };
  const state = () => join(dir, 'state-full');

  beforeAll(async () => {
    // A machine with a fixed address inside the range: the conflict check must skip it.
    await lan.exec(lan.client, 'ip', ['addr', 'add', '192.0.2.100/24', 'dev', 'eth1']);
    server = await pxeServe(lan, [
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--boot-files',
      bootFiles,
      '--state',
      state(),
      '--probe-seconds',
      '1',
    ]);
  });
  afterAll(async () => {
    await server?.stop();
    await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth1']);
  });

  it('leases udhcpc an address of the range, skipping one that answers ping, and keeps it in the lease file', async () => {
    const r = await udhcpc('eth0');
    expect(r.ip, r.log).toBe('192.0.2.101');
    expect(r.log).toContain('mask=255.255.255.0');
    expect(r.log).toContain(`serverid=${PXE_SERVER_IP}`);
    const leases = JSON.parse(await fsp.readFile(join(state(), 'pxe-leases-br0.json'), 'utf8'));
    const mac = await lan.clientMac('eth0');
    expect(leases).toEqual([expect.objectContaining({ mac, ip: '192.0.2.101', state: 'bound' })]);
    // Asked again, the same machine gets the same address.
    expect((await udhcpc('eth0')).ip).toBe('192.0.2.101');
  });

  it('leases ISC dhclient an address too', async () => {
    await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth1']);
    const r = await dhclient('eth1');
    expect(r.ip, r.log).toMatch(/^192\.0\.2\.1(0[02-9]|1\d|20)$/);
    expect(r.ip).not.toBe('192.0.2.101');
  });

  it('lists both clients with their decision trace on /api/pxe/clients', async () => {
    const get = await pairedCurl(lan, dir, server.pin);
    const body = (await get('/api/pxe/clients')) as {
      server: { mode: string; interface: string; range: string };
      clients: { mac: string; ip: string; stage: string; trace: { text: string }[] }[];
    };
    expect(body.server).toMatchObject({ mode: 'full', interface: 'br0', range: '192.0.2.100-192.0.2.120' });
    const eth0 = await lan.clientMac('eth0');
    const c = body.clients.find((x) => x.mac === eth0);
    expect(c, JSON.stringify(body)).toMatchObject({ ip: '192.0.2.101', stage: 'dhcp' });
    expect(c!.trace.map((t) => t.text).join('\n')).toMatch(/ACK 192\.0\.2\.101/);
    expect(body.clients.length).toBe(2);
  });

  it('ignores malformed packets and goes on serving', async () => {
    // Sent to the server's address (a client without an address has no route to broadcast on).
    await lan.exec(lan.client, 'ip', ['addr', 'add', '192.0.2.60/24', 'dev', 'eth0']);
    try {
      const send = `const s=require('dgram').createSocket('udp4');let n=0;const go=(e)=>{if(e)throw e;if(n++>=20)return s.close();s.send(Buffer.from(n%2?'garbage':'\\x01\\x01\\x06'),67,'${PXE_SERVER_IP}',go)};go()`;
      await lan.exec(lan.client, process.execPath, ['-e', send]);
      await server.waitFor(/malformed DHCP packet from 192\.0\.2\.\d+:\d+ ignored/);
    } finally {
      await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth0']);
    }
    expect((await udhcpc('eth0')).ip).toBe('192.0.2.101');
  });

  it('refuses a second server on the same interface, and says why for bad arguments', async () => {
    const cli = new URL('../../rescue/cli/main.ts', import.meta.url).pathname;
    const serve = (args: string[]) =>
      lan.exec(
        lan.server,
        process.execPath,
        [cli, 'pxe', 'serve', '--boot-files', bootFiles, '--state', join(dir, 'state-x'), ...args],
        {
          allowFail: true,
        },
      );
    const second = await serve(['--interface', 'br0']);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('[E_PXE_PORT_IN_USE]');
    expect(second.stderr).toContain('port 67 on br0');
    const none = await serve(['--interface', 'nosuch0']);
    expect(none.stderr).toMatch(/There is no network interface nosuch0 \[E_PXE_INTERFACE\]/);
    expect(none.stderr).toMatch(/Pick one of: .*br0/);
    await lan.exec(lan.server, 'ip', ['link', 'add', 'bare0', 'type', 'veth', 'peer', 'name', 'bare1']);
    const bare = await serve(['--interface', 'bare0']);
    expect(bare.stderr).toContain('[E_PXE_NO_ADDRESS]');
    const outside = await serve(['--interface', 'other0', '--full-dhcp', '--range', '192.0.2.10-192.0.2.20']);
    expect(outside.stderr).toContain("is not inside this interface's network 198.51.100.0/24 [E_PXE_RANGE]");
    const noFiles = await lan.exec(
      lan.server,
      process.execPath,
      [cli, 'pxe', 'serve', '--interface', 'other0', '--boot-files', join(dir, 'nothing-here')],
      { allowFail: true },
    );
    expect(noFiles.stderr).toContain('[E_PXE_NO_BOOT_FILES]');
    expect(noFiles.stderr).toContain('rescue media pxe --out');
  });

  it('does not answer on another network of the same host', async () => {
    const r = await lan.exec(
      lan.other,
      'busybox',
      ['udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '2', '-T', '1', '-s', join(dir, 'udhcpc.sh')],
      { allowFail: true },
    );
    expect(r.code).not.toBe(0);
    expect(await fsp.readFile(join(dir, 'udhcpc-eth0.log'), 'utf8').catch(() => '')).not.toContain(
      '198.51.100',
    );
  });
});

describe('proxy DHCP beside the network’s own DHCP server', () => {
  let router: BackgroundProcess;
  let server: BackgroundProcess & { pin: string };

  beforeAll(async () => {
    router = await routerDhcp(lan, join(dir, 'dnsmasq.leases'));
    server = await pxeServe(lan, [
      '--boot-files',
      bootFiles,
      '--state',
      join(dir, 'state-proxy'),
      '--probe-seconds',
      '8',
    ]);
  });
  afterAll(async () => {
    await server?.stop();
    await router?.stop();
  });

  it('finds the router’s DHCP server at start', async () => {
    await server.waitFor(
      new RegExp(`the network's DHCP server is ${ROUTER_IP.replaceAll('.', '\\.')} \\(it answered`),
    );
    expect(server.output()).not.toContain('WARNING');
  });

  it('leaves address assignment to it: udhcpc gets the router’s address, no lease here', async () => {
    const r = await udhcpc('eth0');
    expect(r.ip, r.log).toMatch(/^192\.0\.2\.1(5\d|60)$/);
    expect(r.log).toContain(`serverid=${ROUTER_IP}`);
    await expect(fsp.stat(join(dir, 'state-proxy', 'pxe-leases-br0.json'))).rejects.toThrow();
  });

  it('serves the boot menu and the boot files over HTTP, with ranges', async () => {
    const curl = (...a: string[]) => lan.exec(lan.client, 'curl', ['-sS', '--fail', ...a]);
    // The client needs an address on the LAN for this (as iPXE has one by now).
    await lan.exec(lan.client, 'ip', ['addr', 'add', '192.0.2.50/24', 'dev', 'eth0']);
    try {
      const script = (await curl(`http://${PXE_SERVER_IP}/pxe/boot.ipxe?mac=52:54:00:aa:bb:cc`)).stdout;
      expect(script).toMatch(/^#!ipxe\n/);
      expect(script).toContain(`kernel http://${PXE_SERVER_IP}/pxe/files/vmlinuz`);
      expect(script).toContain('rescue.id=test-build');
      expect(script).toContain(`rescue.server=http://${PXE_SERVER_IP}/`);
      expect(script).toContain('rescue.mac=52:54:00:aa:bb:cc');
      const tftp = (await curl(`http://${PXE_SERVER_IP}/pxe/boot.ipxe?via=tftp`)).stdout;
      expect(tftp).toContain(`kernel tftp://${PXE_SERVER_IP}/vmlinuz`);
      const whole = await curl(
        '-o',
        join(dir, 'got-root'),
        '-w',
        '%{http_code} %{size_download}',
        `http://${PXE_SERVER_IP}/pxe/files/rescue-root.cpio`,
      );
      expect(whole.stdout).toBe('200 1000000');
      expect(await fsp.readFile(join(dir, 'got-root'))).toEqual(
        await fsp.readFile(join(bootFiles, 'rescue-root.cpio')),
      );
      const part = await curl(
        '-r',
        '10-19',
        '-D',
        '-',
        '-o',
        '/dev/null',
        `http://${PXE_SERVER_IP}/pxe/files/vmlinuz`,
      );
      expect(part.stdout).toMatch(/^HTTP\/1\.1 206/);
      expect(part.stdout).toMatch(/content-range: bytes 10-19\/300000/i);
      const missing = await lan.exec(
        lan.client,
        'curl',
        [
          '-s',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          `http://${PXE_SERVER_IP}/pxe/files/..%2F..%2Fetc%2Fpasswd`,
        ],
        { allowFail: true },
      );
      expect(missing.stdout).toBe('404');
      // The iPXE loaders over TFTP (from Debian's ipxe package), compared with the originals.
      await curl('-o', join(dir, 'undionly.kpxe'), `tftp://${PXE_SERVER_IP}/undionly.kpxe`);
      expect(await fsp.readFile(join(dir, 'undionly.kpxe'))).toEqual(
        await fsp.readFile('/usr/lib/ipxe/undionly.kpxe'),
      );
    } finally {
      await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth0']);
    }
  });
});

describe('full DHCP beside another DHCP server', () => {
  it('says so at start', async () => {
    const router = await routerDhcp(lan, join(dir, 'dnsmasq2.leases'));
    try {
      const server = await pxeServe(lan, [
        '--full-dhcp',
        '--range',
        '192.0.2.100-192.0.2.120',
        '--boot-files',
        bootFiles,
        '--state',
        join(dir, 'state-rival'),
        '--probe-seconds',
        '8',
      ]);
      try {
        await server.waitFor(
          new RegExp(`WARNING: another DHCP server answers on br0 at ${ROUTER_IP.replaceAll('.', '\\.')}`),
        );
      } finally {
        await server.stop();
      }
    } finally {
      await router.stop();
    }
  });
});

describe('menu entries and boot paths', () => {
  it('offers a custom image, serves it, and explains --secure-boot without its loaders', async () => {
    const custom = join(dir, 'tools.iso');
    await fsp.writeFile(custom, Buffer.alloc(4096, 7));
    const server = await pxeServe(lan, [
      '--boot-files',
      bootFiles,
      '--state',
      join(dir, 'state-menu'),
      '--probe-seconds',
      '0',
      '--custom',
      custom,
      '--menu',
      '3',
    ]);
    await lan.exec(lan.client, 'ip', ['addr', 'add', '192.0.2.51/24', 'dev', 'eth0']);
    try {
      const curl = (...a: string[]) => lan.exec(lan.client, 'curl', ['-sS', '--fail', ...a]);
      const script = (await curl(`http://${PXE_SERVER_IP}/pxe/boot.ipxe`)).stdout;
      expect(script).toContain('choose --default rescue --timeout 3000 target');
      expect(script).toContain('item custom Custom image: tools.iso');
      expect(script).toContain(`sanboot --no-describe http://${PXE_SERVER_IP}/pxe/files/tools.iso`);
      expect(script).toContain('sanboot --no-describe --drive 0x80');
      expect(script).toContain('item rescue Rescue environment');
      const head = await curl('-I', `http://${PXE_SERVER_IP}/pxe/files/tools.iso`);
      expect(head.stdout).toMatch(/content-length: 4096/i);
    } finally {
      await server.stop();
      await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth0']);
    }
    const cli = new URL('../../rescue/cli/main.ts', import.meta.url).pathname;
    const sb = await lan.exec(
      lan.server,
      process.execPath,
      [
        cli,
        'pxe',
        'serve',
        '--interface',
        'br0',
        '--boot-files',
        bootFiles,
        '--secure-boot',
        '--probe-seconds',
        '0',
      ],
      { allowFail: true },
    );
    expect(sb.stderr).toContain('--secure-boot needs shimx64.efi and grubx64.efi');
    expect(sb.stderr).toContain('[E_PXE_NO_LOADER]');
    const noCustom = await lan.exec(
      lan.server,
      process.execPath,
      [cli, 'pxe', 'serve', '--interface', 'br0', '--boot-files', bootFiles, '--menu-default', 'custom'],
      { allowFail: true },
    );
    expect(noCustom.code).toBe(2);
    expect(noCustom.stderr).toContain('--menu-default custom needs --custom FILE');
  });

  it('--menu-default local: the menu starts this computer’s disk unless someone chooses; --menu 0 goes straight there', async () => {
    for (const [menu, expected] of [
      ['4', `choose --default local --timeout 4000 target && goto \${target} || goto local`],
      ['0', 'goto local'],
    ]) {
      const server = await pxeServe(lan, [
        '--boot-files',
        bootFiles,
        '--state',
        join(dir, 'state-local'),
        '--probe-seconds',
        '0',
        '--menu',
        menu,
        '--menu-default',
        'local',
      ]);
      await lan.exec(lan.client, 'ip', ['addr', 'add', '192.0.2.52/24', 'dev', 'eth0']);
      try {
        const script = (
          await lan.exec(lan.client, 'curl', ['-sS', '--fail', `http://${PXE_SERVER_IP}/pxe/boot.ipxe`])
        ).stdout;
        expect(script).toContain(expected);
        if (menu === '0') expect(script).not.toContain('choose');
      } finally {
        await server.stop();
        await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth0']);
      }
    }
  });

  it('--secure-boot: UEFI clients are pointed at shim, and GRUB gets its config (with the MAC) over TFTP', async () => {
    const sbFiles = await fakeBootFiles(join(dir, 'boot-sb'));
    await fsp.writeFile(join(sbFiles, 'shimx64.efi'), Buffer.alloc(1000, 1));
    await fsp.writeFile(join(sbFiles, 'grubx64.efi'), Buffer.alloc(2000, 2));
    const server = await pxeServe(lan, [
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--secure-boot',
      '--boot-files',
      sbFiles,
      '--state',
      join(dir, 'state-sb'),
      '--probe-seconds',
      '0',
      '--menu',
      '0',
    ]);
    try {
      // A UEFI PXE client as udhcpc can pose: vendor class PXEClient, architecture 7.
      const r = await udhcpc('eth0', [
        '-V',
        'PXEClient:Arch:00007:UNDI:003016',
        '-x',
        '0x5d:0007',
        '-O',
        'bootfile',
      ]);
      expect(r.ip, r.log).toMatch(/^192\.0\.2\.1\d\d$/);
      expect(r.log).toContain('boot_file=shimx64.efi');
      await lan.exec(lan.client, 'ip', ['addr', 'add', `${r.ip}/24`, 'dev', 'eth0']);
      const tftp = (name: string) =>
        lan.exec(lan.client, 'curl', ['-sS', '--fail', `tftp://${PXE_SERVER_IP}/${name}`]);
      const cfg = (await tftp('grub/grub.cfg-01-52-54-00-aa-bb-cc')).stdout;
      expect(cfg).toContain(
        `linux (tftp,${PXE_SERVER_IP})/vmlinuz rescue.id=test-build rescue.server=http://${PXE_SERVER_IP}/ rescue.mac=52:54:00:aa:bb:cc`,
      );
      expect(cfg).toContain(
        `initrd (tftp,${PXE_SERVER_IP})/initrd.img (tftp,${PXE_SERVER_IP})/rescue-root.cpio`,
      );
      // Debian's GRUB asks for /grub/grub.cfg and fills in the MAC itself.
      const plain = (await tftp('grub/grub.cfg')).stdout;
      expect(plain).toContain('set timeout=0');
      expect(plain).toContain(`rescue.mac=\${net_default_mac}`);
      expect((await tftp('grubx64.efi')).stdout.length).toBe(2000);
    } finally {
      await server.stop();
      await lan.exec(lan.client, 'ip', ['addr', 'flush', 'dev', 'eth0']);
    }
  });
});
