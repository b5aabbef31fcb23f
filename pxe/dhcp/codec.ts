/**
 * DHCPv4 packets (RFC 2131 / 2132) as plain data: a pure codec, no I/O.
 *
 * Options are kept as an ordered list of (code, bytes) so that nothing a client sends is lost —
 * unknown options survive a decode/encode round trip. Long options split over several instances
 * (RFC 3396) are joined on decode and split again on encode; options carried in the `sname` / `file`
 * fields (option 52, overload) are read too. Typed helpers read the options a PXE server needs:
 * message type, client architecture (93), network interface (94), machine UUID (97), vendor class
 * (60), user class (77, both RFC 3004 and the bare "iPXE" form), iPXE's encapsulated options (175)
 * and PXE vendor sub-options (43).
 *
 * Malformed input raises DhcpDecodeError (never anything else), so a server can log and drop it.
 */

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
const MAGIC = 0x63825363;
const FIXED = 236; // bytes before the magic cookie
const MIN_PACKET = FIXED + 4;

export const OPT = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MAX_MESSAGE_SIZE: 57,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  IPXE: 175,
  END: 255,
} as const;

export const MESSAGE = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export class DhcpDecodeError extends Error {
  override name = 'DhcpDecodeError';
}

export interface DhcpOption {
  code: number;
  data: Uint8Array;
}

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** 16 bytes; the hardware address is the first `hlen`. */
  chaddr: Uint8Array;
  /** The `sname` and `file` fields as text (up to the first NUL) when they do not carry options. */
  sname: string;
  file: string;
  options: DhcpOption[];
}

function ip(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

export function ipBytes(text: string): Uint8Array {
  const parts = text.split('.');
  const n = parts.map(Number);
  if (parts.length !== 4 || n.some((x, i) => !/^\d{1,3}$/.test(parts[i]) || x > 255))
    throw new RangeError(`not an IPv4 address: ${text}`);
  return Uint8Array.from(n);
}

function cstring(b: Uint8Array): string {
  const end = b.indexOf(0);
  return Buffer.from(end < 0 ? b : b.subarray(0, end)).toString('latin1');
}

/** Reads the TLV options of `b` into `into`; returns the overload value if option 52 was seen. */
function readOptions(b: Uint8Array, where: string, into: Map<number, Uint8Array[]>, order: number[]): number {
  let overload = 0;
  let i = 0;
  while (i < b.length) {
    const code = b[i++];
    if (code === OPT.PAD) continue;
    if (code === OPT.END) return overload;
    if (i >= b.length) throw new DhcpDecodeError(`option ${code} in ${where} has no length byte`);
    const len = b[i++];
    if (i + len > b.length)
      throw new DhcpDecodeError(`option ${code} in ${where} runs past the end (${len} bytes)`);
    const data = b.subarray(i, i + len);
    i += len;
    if (code === OPT.OVERLOAD) {
      if (len !== 1 || data[0] < 1 || data[0] > 3)
        throw new DhcpDecodeError('option 52 (overload) must be 1, 2 or 3');
      overload = data[0];
      continue;
    }
    const parts = into.get(code);
    if (parts) parts.push(data);
    else {
      into.set(code, [data]);
      order.push(code);
    }
  }
  // Many clients omit END in sname/file, and some omit it at the very end: accepted.
  return overload;
}

export function decodeDhcp(input: Uint8Array): DhcpPacket {
  const b = input instanceof Buffer ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (b.length < MIN_PACKET)
    throw new DhcpDecodeError(`${b.length} bytes: too short for DHCP (${MIN_PACKET} at least)`);
  if (b.readUInt32BE(FIXED) !== MAGIC)
    throw new DhcpDecodeError('no DHCP magic cookie (a plain BOOTP packet?)');
  const hlen = b[2];
  if (hlen > 16) throw new DhcpDecodeError(`hardware address length ${hlen} exceeds 16`);
  const parts = new Map<number, Uint8Array[]>();
  const order: number[] = [];
  const overload = readOptions(b.subarray(MIN_PACKET), 'options', parts, order);
  const fileField = b.subarray(108, 236);
  const snameField = b.subarray(44, 108);
  // RFC 2131 4.1: options, then file (if overloaded), then sname.
  if (overload & 1) readOptions(fileField, 'file', parts, order);
  if (overload & 2) readOptions(snameField, 'sname', parts, order);
  return {
    op: b[0],
    htype: b[1],
    hlen,
    hops: b[3],
    xid: b.readUInt32BE(4),
    secs: b.readUInt16BE(8),
    flags: b.readUInt16BE(10),
    ciaddr: ip(b, 12),
    yiaddr: ip(b, 16),
    siaddr: ip(b, 20),
    giaddr: ip(b, 24),
    chaddr: Uint8Array.from(b.subarray(28, 44)),
    sname: overload & 2 ? '' : cstring(snameField),
    file: overload & 1 ? '' : cstring(fileField),
    options: order.map((code) => {
      const list = parts.get(code)!;
      return {
        code,
        data: list.length === 1 ? Uint8Array.from(list[0]) : Uint8Array.from(Buffer.concat(list)),
      };
    }),
  };
}

/** The packet as bytes: options in order, each longer than 255 bytes split (RFC 3396), END, padded to 300. */
export function encodeDhcp(p: DhcpPacket): Buffer {
  const opts: Buffer[] = [];
  for (const o of p.options) {
    if (o.code === OPT.PAD || o.code === OPT.END || o.code === OPT.OVERLOAD || o.code > 255 || o.code < 0)
      throw new RangeError(`option code ${o.code} cannot be encoded as data`);
    if (o.data.length === 0) opts.push(Buffer.from([o.code, 0]));
    for (let i = 0; i < o.data.length; i += 255) {
      const chunk = o.data.subarray(i, i + 255);
      opts.push(Buffer.from([o.code, chunk.length]), Buffer.from(chunk));
    }
  }
  opts.push(Buffer.from([OPT.END]));
  const body = Buffer.concat(opts);
  const out = Buffer.alloc(Math.max(300, MIN_PACKET + body.length));
  out[0] = p.op;
  out[1] = p.htype;
  out[2] = p.hlen;
  out[3] = p.hops;
  out.writeUInt32BE(p.xid >>> 0, 4);
  out.writeUInt16BE(p.secs, 8);
  out.writeUInt16BE(p.flags, 10);
  out.set(ipBytes(p.ciaddr), 12);
  out.set(ipBytes(p.yiaddr), 16);
  out.set(ipBytes(p.siaddr), 20);
  out.set(ipBytes(p.giaddr), 24);
  out.set(p.chaddr.subarray(0, 16), 28);
  const sname = Buffer.from(p.sname, 'latin1');
  const file = Buffer.from(p.file, 'latin1');
  if (sname.length > 63) throw new RangeError('sname is longer than 63 bytes');
  if (file.length > 127) throw new RangeError('file is longer than 127 bytes (use option 67)');
  sname.copy(out, 44);
  file.copy(out, 108);
  out.writeUInt32BE(MAGIC, FIXED);
  body.copy(out, MIN_PACKET);
  return out;
}

export function option(p: DhcpPacket, code: number): Uint8Array | undefined {
  return p.options.find((o) => o.code === code)?.data;
}

export function messageType(p: DhcpPacket): number | undefined {
  const d = option(p, OPT.MESSAGE_TYPE);
  return d && d.length === 1 ? d[0] : undefined;
}

/** "52:54:00:12:34:56" */
export function macOf(p: DhcpPacket): string {
  return Array.from(p.chaddr.subarray(0, Math.min(p.hlen, 16)), (x) => x.toString(16).padStart(2, '0')).join(
    ':',
  );
}

/** Option 93: the client's system architectures (RFC 4578; 0 = BIOS, 7 and 9 = x64 UEFI, …). */
export function clientArchitectures(p: DhcpPacket): number[] {
  const d = option(p, OPT.CLIENT_ARCH);
  if (!d || d.length % 2 !== 0) return [];
  const out: number[] = [];
  for (let i = 0; i < d.length; i += 2) out.push((d[i] << 8) | d[i + 1]);
  return out;
}

/** Option 97: the machine's UUID as text (type 0 + 16 bytes; PXE's byte order for the first three fields). */
export function clientUuid(p: DhcpPacket): string | undefined {
  const d = option(p, OPT.CLIENT_UUID);
  if (d?.length !== 17 || d[0] !== 0) return undefined;
  const h = Buffer.from(d.subarray(1)).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Option 94: network interface identifier (type 1 = UNDI, major, minor). */
export function clientNdi(p: DhcpPacket): { type: number; major: number; minor: number } | undefined {
  const d = option(p, OPT.CLIENT_NDI);
  return d && d.length === 3 ? { type: d[0], major: d[1], minor: d[2] } : undefined;
}

export function vendorClass(p: DhcpPacket): string | undefined {
  const d = option(p, OPT.VENDOR_CLASS);
  return d ? Buffer.from(d).toString('latin1') : undefined;
}

/**
 * Option 77. RFC 3004 says length-prefixed instances; iPXE and many firmwares send the bare text
 * ("iPXE"). A value that parses exactly as length-prefixed instances is read so, else as one text.
 */
export function userClasses(p: DhcpPacket): string[] {
  const d = option(p, OPT.USER_CLASS);
  if (!d || d.length === 0) return [];
  const out: string[] = [];
  let i = 0;
  while (i < d.length) {
    const len = d[i];
    if (len === 0 || i + 1 + len > d.length) return [Buffer.from(d).toString('latin1')];
    out.push(Buffer.from(d.subarray(i + 1, i + 1 + len)).toString('latin1'));
    i += 1 + len;
  }
  return out;
}

/** Sub-options of an encapsulating option (43 for PXE, 175 for iPXE): code → bytes. */
export function decodeSubOptions(d: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  let i = 0;
  while (i < d.length) {
    const code = d[i++];
    if (code === 0) continue;
    if (code === 255) break;
    if (i >= d.length) throw new DhcpDecodeError(`sub-option ${code} has no length byte`);
    const len = d[i++];
    if (i + len > d.length) throw new DhcpDecodeError(`sub-option ${code} runs past the end`);
    out.set(code, d.subarray(i, i + len));
    i += len;
  }
  return out;
}

export function encodeSubOptions(subs: [number, Uint8Array][]): Uint8Array {
  const parts: Buffer[] = [];
  for (const [code, data] of subs) {
    if (data.length > 255) throw new RangeError(`sub-option ${code} is longer than 255 bytes`);
    parts.push(Buffer.from([code, data.length]), Buffer.from(data));
  }
  parts.push(Buffer.from([255]));
  return Uint8Array.from(Buffer.concat(parts));
}

/** True when the client says it is iPXE already: user class "iPXE" or any option 175 (breaks the chainload loop). */
export function isIpxe(p: DhcpPacket): boolean {
  return userClasses(p).includes('iPXE') || option(p, OPT.IPXE) !== undefined;
}

/** A PXE client announces itself with vendor class "PXEClient…" (firmware and iPXE alike). */
export function isPxeClient(p: DhcpPacket): boolean {
  return vendorClass(p)?.startsWith('PXEClient') ?? false;
}
