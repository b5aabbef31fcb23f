/**
 * Facts about the interface the PXE server serves: its IPv4 address and prefix, MTU and MAC — read
 * from the kernel for this process's network namespace (os.networkInterfaces, /proc/self/net/dev,
 * `ip -o link`), so the server answers for the network that interface is really on. (/sys/class/net
 * shows the namespace sysfs was mounted in, which differs under `nsenter --net`.)
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';
import { RescueError } from '../../rescue/engine/errors.ts';

export interface InterfaceFacts {
  name: string;
  ip: string;
  prefix: number;
  mac: string;
  mtu: number;
}

async function interfaceNames(): Promise<string[]> {
  const dev = await fsp.readFile('/proc/self/net/dev', 'utf8').catch(() => '');
  return dev
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0].trim())
    .filter((n) => n !== '');
}

/** The interface's MTU as `ip -o link` (iproute2 or busybox) reports it; 1500 when it cannot tell. */
async function mtuOf(name: string): Promise<number> {
  const out = await promisify(execFile)('ip', ['-o', 'link', 'show', 'dev', name])
    .then((r) => r.stdout)
    .catch(() => '');
  const m = /\bmtu (\d+)/.exec(out);
  return m ? Number(m[1]) : 1500;
}

export async function interfaceFacts(name: string): Promise<InterfaceFacts> {
  const names = await interfaceNames();
  const addrs = networkInterfaces()[name];
  if (!addrs && !names.includes(name)) {
    const others = names.filter((n) => n !== 'lo');
    throw new RescueError(
      'E_PXE_INTERFACE',
      `There is no network interface ${name}`,
      others.length > 0
        ? `Pick one of: ${others.join(', ')} (see \`ip addr\`).`
        : 'Connect a network cable and check `ip link`.',
    );
  }
  const v4 = addrs?.find((a) => a.family === 'IPv4');
  if (!v4)
    throw new RescueError(
      'E_PXE_NO_ADDRESS',
      `Interface ${name} has no IPv4 address`,
      `Give it one (e.g. \`ip addr add 192.168.50.1/24 dev ${name}\`) — with --full-dhcp this server is the network's only DHCP server and needs a fixed address.`,
    );
  const prefix = Number(v4.cidr?.split('/')[1] ?? 24);
  return { name, ip: v4.address, prefix, mac: v4.mac.toLowerCase(), mtu: await mtuOf(name) };
}
