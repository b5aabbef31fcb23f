/**
 * UDP sockets tied to one network interface. A DHCP server must listen on 0.0.0.0:67 (clients
 * without an address broadcast to 255.255.255.255) yet serve only the interface it was given, and its
 * broadcast replies must leave through that interface: SO_BINDTODEVICE, which Node's dgram does not
 * offer. The socket is made, bound to the device and bound to the port through libc (ffi-rs), then
 * handed to dgram by its file descriptor (dgram's documented `bind({ fd })`).
 */
import { createSocket, type Socket } from 'node:dgram';
import { RescueError } from '../../rescue/engine/errors.ts';
import { loadFfiRs } from '../../rescue/engine/native.ts';

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_BROADCAST = 6;
const SO_BINDTODEVICE = 25;
const LIBC = 'rescue-libc';

const ERRNO: Record<number, string> = {
  1: 'EPERM',
  13: 'EACCES',
  19: 'ENODEV',
  98: 'EADDRINUSE',
  99: 'EADDRNOTAVAIL',
};

type FfiRs = Awaited<ReturnType<typeof loadFfiRs>>;
let opened: FfiRs | undefined;

async function libc(): Promise<FfiRs> {
  if (opened) return opened;
  const ffi = await loadFfiRs();
  ffi.open({ library: LIBC, path: 'libc.so.6' });
  opened = ffi;
  return ffi;
}

function call(ffi: FfiRs, funcName: string, paramsType: number[], paramsValue: unknown[]): number {
  return ffi.load({ library: LIBC, funcName, retType: ffi.DataType.I32, paramsType, paramsValue }) as number;
}

function errno(ffi: FfiRs): number {
  const T = ffi.DataType;
  const p = ffi.load({
    library: LIBC,
    funcName: '__errno_location',
    retType: T.External,
    paramsType: [],
    paramsValue: [],
  });
  const [values] = ffi.restorePointer({
    retType: [ffi.arrayConstructor({ type: T.I32Array, length: 1 })],
    paramsValue: ffi.wrapPointer([p as import('ffi-rs').JsExternal]),
  }) as unknown as [number[]];
  return values[0];
}

export interface InterfaceSocketOptions {
  interface: string;
  port: number;
  /** Let other sockets (another interface's server, a DHCP client) share the port. */
  reuseAddr?: boolean;
  broadcast?: boolean;
}

/** A dgram socket receiving on 0.0.0.0:`port` from `interface` only, sending out of it. */
export async function udpOnInterface(o: InterfaceSocketOptions): Promise<Socket> {
  let ffi: FfiRs;
  try {
    ffi = await libc();
  } catch (e) {
    throw new RescueError(
      'E_PXE_SOCKET',
      `Cannot bind a socket to ${o.interface}: the native helper did not load (${(e as Error).message})`,
      'Run rescue from a checkout with npm ci done, or the single binary with its rescue-lib folder beside it.',
    );
  }
  const T = ffi.DataType;
  const fail = (what: string, code: number): never => {
    const name = ERRNO[code] ?? `errno ${code}`;
    const remedy =
      name === 'EADDRINUSE'
        ? `Another program serves UDP port ${o.port} on ${o.interface} (a DHCP or TFTP server such as dnsmasq): stop it, or let it keep that job.`
        : name === 'ENODEV'
          ? `There is no interface ${o.interface}: see \`ip link\`.`
          : name === 'EACCES' || name === 'EPERM'
            ? 'Run as root: ports below 1024 and binding to an interface need it.'
            : 'Check the interface and that no other server uses the port.';
    throw new RescueError(
      name === 'EADDRINUSE' ? 'E_PXE_PORT_IN_USE' : 'E_PXE_SOCKET',
      `Cannot ${what} (UDP port ${o.port} on ${o.interface}): ${name}`,
      remedy,
      { interface: o.interface, port: o.port, errno: name },
    );
  };
  const fd = call(ffi, 'socket', [T.I32, T.I32, T.I32], [AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0]);
  if (fd < 0) fail('make a socket', errno(ffi));
  const intOpt = (opt: number, v: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return call(ffi, 'setsockopt', [T.I32, T.I32, T.I32, T.U8Array, T.I32], [fd, SOL_SOCKET, opt, b, 4]);
  };
  try {
    if (o.reuseAddr !== false && intOpt(SO_REUSEADDR, 1) < 0) fail('share the port', errno(ffi));
    if (o.broadcast && intOpt(SO_BROADCAST, 1) < 0) fail('allow broadcasts', errno(ffi));
    const name = Buffer.from(`${o.interface}\0`);
    if (
      call(
        ffi,
        'setsockopt',
        [T.I32, T.I32, T.I32, T.U8Array, T.I32],
        [fd, SOL_SOCKET, SO_BINDTODEVICE, name, name.length],
      ) < 0
    )
      fail(`bind to interface ${o.interface}`, errno(ffi));
    const sa = Buffer.alloc(16); // struct sockaddr_in { family, port (big-endian), 0.0.0.0, zero }
    sa.writeUInt16LE(AF_INET, 0);
    sa.writeUInt16BE(o.port, 2);
    if (call(ffi, 'bind', [T.I32, T.U8Array, T.I32], [fd, sa, sa.length]) < 0) fail('listen', errno(ffi));
  } catch (e) {
    call(ffi, 'close', [T.I32], [fd]);
    throw e;
  }
  const sock = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ fd }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  if (o.broadcast) sock.setBroadcast(true);
  return sock;
}

/** A Node bind error as the RescueError the CLI shows. */
export function portError(e: NodeJS.ErrnoException, port: number, iface: string): RescueError {
  if (e.code === 'EADDRINUSE')
    return new RescueError(
      'E_PXE_PORT_IN_USE',
      `UDP port ${port} on ${iface} is in use by another program`,
      port === 69
        ? 'Another TFTP server runs here (dnsmasq, tftpd-hpa): stop it.'
        : 'Another PXE or DHCP server runs here: stop it.',
      { interface: iface, port },
    );
  return new RescueError(
    'E_PXE_SOCKET',
    `Cannot listen on UDP port ${port} on ${iface}: ${e.message}`,
    'Run as root.',
    {
      interface: iface,
      port,
    },
  );
}
