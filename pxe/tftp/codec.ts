/**
 * TFTP packets (RFC 1350, options RFC 2347/2348/2349/7440) as plain data: a pure codec.
 * Malformed input raises TftpDecodeError, never anything else.
 */

export const OP = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 error codes (+ 8, option negotiation refused, RFC 2347). */
export const ERR = {
  UNDEFINED: 0,
  NOT_FOUND: 1,
  ACCESS: 2,
  DISK_FULL: 3,
  ILLEGAL: 4,
  UNKNOWN_TID: 5,
  EXISTS: 6,
  NO_USER: 7,
  OPTIONS: 8,
} as const;

export class TftpDecodeError extends Error {
  override name = 'TftpDecodeError';
}

export type TftpPacket =
  | { op: 1 | 2; filename: string; mode: string; options: Record<string, string> }
  | { op: 3; block: number; data: Uint8Array }
  | { op: 4; block: number }
  | { op: 5; code: number; message: string }
  | { op: 6; options: Record<string, string> };

/** NUL-terminated strings from `at` to the end. */
function strings(b: Buffer, at: number): string[] {
  const out: string[] = [];
  let i = at;
  while (i < b.length) {
    const end = b.indexOf(0, i);
    if (end < 0) throw new TftpDecodeError('a string is not NUL-terminated');
    out.push(b.toString('latin1', i, end));
    i = end + 1;
  }
  return out;
}

function optionPairs(list: string[]): Record<string, string> {
  if (list.length % 2 !== 0) throw new TftpDecodeError('an option has no value');
  const out: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i].toLowerCase();
    if (name === '' || name in out) throw new TftpDecodeError(`option "${list[i]}" is empty or given twice`);
    out[name] = list[i + 1];
  }
  return out;
}

export function decodeTftp(input: Uint8Array): TftpPacket {
  const b = input instanceof Buffer ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (b.length < 2) throw new TftpDecodeError(`${b.length} bytes: too short for TFTP`);
  const op = b.readUInt16BE(0);
  if (op !== OP.OACK && b.length < 4)
    throw new TftpDecodeError(`${b.length} bytes: too short for opcode ${op}`);
  switch (op) {
    case OP.RRQ:
    case OP.WRQ: {
      const [filename, mode, ...rest] = strings(b, 2);
      if (filename === undefined || mode === undefined)
        throw new TftpDecodeError('request without file name or mode');
      return { op, filename, mode: mode.toLowerCase(), options: optionPairs(rest) };
    }
    case OP.DATA:
      return { op, block: b.readUInt16BE(2), data: Uint8Array.from(b.subarray(4)) };
    case OP.ACK:
      if (b.length !== 4) throw new TftpDecodeError('ACK must be 4 bytes');
      return { op, block: b.readUInt16BE(2) };
    case OP.ERROR: {
      const [message] = strings(b, 4);
      return { op, code: b.readUInt16BE(2), message: message ?? '' };
    }
    case OP.OACK:
      return { op, options: optionPairs(strings(b, 2)) };
    default:
      throw new TftpDecodeError(`unknown opcode ${op}`);
  }
}

function withStrings(op: number, list: string[]): Buffer {
  return Buffer.concat([
    Buffer.from([op >> 8, op & 0xff]),
    ...list.map((s) => Buffer.from(`${s}\0`, 'latin1')),
  ]);
}

export function encodeTftp(p: TftpPacket): Buffer {
  switch (p.op) {
    case OP.RRQ:
    case OP.WRQ:
      return withStrings(p.op, [p.filename, p.mode, ...Object.entries(p.options).flat()]);
    case OP.DATA: {
      const out = Buffer.alloc(4 + p.data.length);
      out.writeUInt16BE(OP.DATA, 0);
      out.writeUInt16BE(p.block, 2);
      out.set(p.data, 4);
      return out;
    }
    case OP.ACK: {
      const out = Buffer.alloc(4);
      out.writeUInt16BE(OP.ACK, 0);
      out.writeUInt16BE(p.block, 2);
      return out;
    }
    case OP.ERROR:
      return Buffer.concat([
        Buffer.from([0, OP.ERROR, p.code >> 8, p.code & 0xff]),
        Buffer.from(`${p.message}\0`, 'latin1'),
      ]);
    case OP.OACK:
      return withStrings(OP.OACK, Object.entries(p.options).flat());
  }
}
