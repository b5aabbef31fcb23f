/**
 * A read-only TFTP server (RFC 1350) for network boot: blksize (RFC 2348, capped by the interface's
 * MTU and per client), tsize and timeout (RFC 2349), windowsize (RFC 7440), block numbers that roll
 * over past 65535, many transfers at once (each on its own port, as RFC 1350 has it), and files
 * confined to the root: `..`, and symbolic links leading out, are refused; a leading `/` or `\` means
 * the root (boot ROMs send both).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { type Confined, confine } from '../confine.ts';
import { decodeTftp, ERR, encodeTftp, OP, type TftpPacket } from './codec.ts';

export interface TftpEvent {
  type: 'start' | 'done' | 'error';
  client: string;
  file: string;
  bytes?: number;
  ms?: number;
  options?: Record<string, string>;
  reason?: string;
}

export interface TftpServerOptions {
  root: string;
  /** Names served from exact paths outside the root (the iPXE loaders from Debian's ipxe package). */
  files?: Record<string, string>;
  /** Files made on request (a boot loader's config): the bytes for `name` asked by `ip`, or undefined. */
  generated?: (name: string, ip: string) => Buffer | undefined;
  address?: string;
  port?: number;
  /** The largest block the link carries: MTU − 32 (IP 20 + UDP 8 + TFTP 4). Default 1468 (MTU 1500). */
  maxBlksize?: number;
  /** Per-client caps (IP address → block size) for firmware that mishandles big blocks. */
  clientBlksize?: Record<string, number>;
  maxWindow?: number;
  /** Retransmission timeout when the client does not ask for one. */
  timeoutMs?: number;
  retries?: number;
  onEvent?: (e: TftpEvent) => void;
}

class Refused extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** The file `requested` names inside `root`, or Refused (not found / access violation). */
export async function resolveInRoot(root: string, requested: string): Promise<string> {
  const rel = requested.replace(/\\/g, '/').replace(/^\/+/, '');
  const c: Confined = rel === '' ? { refused: 'dotdot' } : await confine(root, rel);
  if ('refused' in c) {
    if (c.refused === 'missing') throw new Refused(ERR.NOT_FOUND, `"${requested}" not found`);
    throw new Refused(
      ERR.ACCESS,
      `"${requested}" ${c.refused === 'escapes' ? 'leads outside' : 'is outside'} the boot folder`,
    );
  }
  if (!(await stat(c.real)).isFile()) throw new Refused(ERR.NOT_FOUND, `"${requested}" is not a file`);
  return c.real;
}

function toNetascii(b: Buffer): Buffer {
  const out: number[] = [];
  for (const c of b) {
    if (c === 0x0a) out.push(0x0d, 0x0a);
    else if (c === 0x0d) out.push(0x0d, 0x00);
    else out.push(c);
  }
  return Buffer.from(out);
}

/** Options this server takes, with the value it answers; unknown or invalid ones are left out. */
export function negotiate(
  asked: Record<string, string>,
  size: number,
  caps: { maxBlksize: number; maxWindow: number },
): Record<string, string> {
  const out: Record<string, string> = {};
  const num = (v: string) => (/^\d{1,6}$/.test(v) ? Number(v) : Number.NaN);
  if ('blksize' in asked) {
    const n = num(asked.blksize);
    if (n >= 8 && n <= 65464) out.blksize = String(Math.min(n, caps.maxBlksize));
  }
  // tsize of an empty file is left unanswered: curl takes "tsize 0" in an OACK for an error.
  if ('tsize' in asked && size > 0) out.tsize = String(size);
  if ('timeout' in asked) {
    const n = num(asked.timeout);
    if (n >= 1 && n <= 255) out.timeout = String(n);
  }
  if ('windowsize' in asked) {
    const n = num(asked.windowsize);
    if (n >= 1 && n <= 65535) out.windowsize = String(Math.min(n, caps.maxWindow));
  }
  return out;
}

/** What a transfer reads: a file, or bytes made on request. */
interface Source {
  size(): Promise<number>;
  all(): Promise<Buffer>;
  read(buf: Buffer, length: number, from: number): Promise<number>;
  close(): Promise<void>;
}

function fileSource(fh: FileHandle): Source {
  return {
    size: async () => (await fh.stat()).size,
    all: () => fh.readFile(),
    read: async (buf, length, from) => (await fh.read(buf, 0, length, from)).bytesRead,
    close: () => fh.close(),
  };
}

function bufferSource(b: Buffer): Source {
  return {
    size: async () => b.length,
    all: async () => b,
    read: async (buf, length, from) => b.copy(buf, 0, from, from + length),
    close: async () => {},
  };
}

export class TftpServer {
  private readonly o: Required<Omit<TftpServerOptions, 'onEvent' | 'clientBlksize' | 'files' | 'generated'>> &
    TftpServerOptions;
  private sock?: Socket;
  private readonly transfers = new Set<Socket>();
  port = 0;

  constructor(o: TftpServerOptions) {
    this.o = {
      address: '0.0.0.0',
      port: 69,
      maxBlksize: 1468,
      maxWindow: 64,
      timeoutMs: 1000,
      retries: 5,
      ...o,
    };
  }

  async start(): Promise<void> {
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    this.sock = sock;
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.o.port, this.o.address, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    this.port = sock.address().port;
    sock.on('error', () => {});
    sock.on('message', (msg, rinfo) => {
      this.request(msg, rinfo).catch(() => {});
    });
  }

  async close(): Promise<void> {
    for (const t of this.transfers) t.close();
    this.transfers.clear();
    await new Promise<void>((resolve) => (this.sock ? this.sock.close(() => resolve()) : resolve()));
  }

  private emit(e: TftpEvent): void {
    this.o.onEvent?.(e);
  }

  private async request(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    const client = `${rinfo.address}:${rinfo.port}`;
    let p: TftpPacket;
    try {
      p = decodeTftp(msg);
    } catch (e) {
      this.emit({
        type: 'error',
        client,
        file: '',
        reason: `malformed request ignored: ${(e as Error).message}`,
      });
      return;
    }
    if (p.op !== OP.RRQ && p.op !== OP.WRQ) return; // stray DATA/ACK on port 69: not ours
    const t = createSocket('udp4');
    this.transfers.add(t);
    t.on('error', () => {});
    await new Promise<void>((resolve) =>
      t.bind(0, this.o.address === '0.0.0.0' ? undefined : this.o.address, resolve),
    );
    t.connect(rinfo.port, rinfo.address);
    await new Promise<void>((resolve) => t.once('connect', resolve));
    const file = p.filename;
    let src: Source | undefined;
    try {
      if (p.op === OP.WRQ) throw new Refused(ERR.ACCESS, 'this server is read-only');
      if (p.mode !== 'octet' && p.mode !== 'netascii')
        throw new Refused(ERR.ILLEGAL, `mode "${p.mode}" is not supported`);
      const key = file.replace(/\\/g, '/').replace(/^\/+/, '');
      const made = this.o.generated?.(key, rinfo.address);
      if (made) src = bufferSource(made);
      else {
        const named = this.o.files && Object.hasOwn(this.o.files, key) ? this.o.files[key] : undefined;
        src = fileSource(await open(named ?? (await resolveInRoot(this.o.root, file)), 'r'));
      }
      await this.send(t, src, p, rinfo, client);
    } catch (e) {
      const code = e instanceof Refused ? e.code : ERR.UNDEFINED;
      const reason = (e as Error).message;
      if (!(e instanceof PeerError)) t.send(encodeTftp({ op: OP.ERROR, code, message: reason }));
      this.emit({ type: 'error', client, file, reason });
    } finally {
      await src?.close();
      // Give the last datagram time to leave before the socket goes.
      setTimeout(() => {
        if (this.transfers.delete(t)) t.close();
      }, 100).unref();
    }
  }

  private async send(
    t: Socket,
    src: Source,
    req: Extract<TftpPacket, { op: 1 | 2 }>,
    rinfo: RemoteInfo,
    client: string,
  ): Promise<void> {
    const started = Date.now();
    let data: Buffer | undefined;
    let size = await src.size();
    if (req.mode === 'netascii') {
      data = toNetascii(await src.all());
      size = data.length;
    }
    const cap = Math.min(this.o.maxBlksize, this.o.clientBlksize?.[rinfo.address] ?? 65464);
    const accepted = negotiate(req.options, size, { maxBlksize: cap, maxWindow: this.o.maxWindow });
    this.emit({ type: 'start', client, file: req.filename, options: accepted });
    await new ReadTransfer({
      t,
      size,
      blksize: accepted.blksize ? Number(accepted.blksize) : 512,
      window: accepted.windowsize ? Number(accepted.windowsize) : 1,
      timeoutMs: accepted.timeout ? Number(accepted.timeout) * 1000 : this.o.timeoutMs,
      retries: this.o.retries,
      oack: Object.keys(accepted).length > 0 ? encodeTftp({ op: OP.OACK, options: accepted }) : undefined,
      read: data ? undefined : (buf, from) => src.read(buf, Math.min(buf.length, size - from), from),
      data,
    }).run();
    this.emit({
      type: 'done',
      client,
      file: req.filename,
      bytes: size,
      ms: Date.now() - started,
      options: accepted,
    });
  }
}

/** The client stopped the transfer itself: no ERROR is sent back. */
class PeerError extends Error {}

/**
 * One download as a state machine driven by the client's ACKs: each ACK is answered with the next
 * window from a read-ahead buffer in the same callback (no await between ACK and DATA unless the
 * buffer needs refilling); a timer resends the window, `retries` times at most.
 */
class ReadTransfer {
  private readonly o: {
    t: Socket;
    size: number;
    blksize: number;
    window: number;
    timeoutMs: number;
    retries: number;
    oack?: Buffer;
    read?: (buf: Buffer, from: number) => Promise<number>;
    data?: Buffer;
  };
  /** Blocks are numbered 1…last; the last is shorter than blksize (empty if size is a multiple). */
  private readonly last: number;
  private next = 1;
  private first = 0;
  private count = 0;
  private packets: Buffer[] = [];
  private readonly slots: Buffer[] = [];
  private reading = false;
  private attempts = 0;
  private timer?: NodeJS.Timeout;
  private cache: { at: number; buf: Buffer; len: number };
  private finish: (err?: Error) => void = () => {};
  private readonly onMessage = (msg: Buffer) => this.message(msg);

  constructor(o: ReadTransfer['o']) {
    this.o = o;
    this.last = Math.floor(o.size / o.blksize) + 1;
    // Read ahead 1 MiB (or a window) at a time: a read per block would wait on the thread pool
    // between every ACK and the next DATA.
    this.cache = o.data
      ? { at: 0, buf: o.data, len: o.data.length }
      : { at: 0, buf: Buffer.alloc(Math.max(1 << 20, o.blksize * o.window) + o.blksize * o.window), len: 0 };
  }

  run(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.finish = (err) => {
        clearTimeout(this.timer);
        this.o.t.off('message', this.onMessage);
        this.finish = () => {};
        if (err) reject(err);
        else resolve();
      };
      this.o.t.on('message', this.onMessage);
      this.timer = setTimeout(() => this.timeout(), this.o.timeoutMs);
      if (this.o.oack) {
        // Window "0": the OACK, acknowledged by ACK 0.
        this.first = 0;
        this.count = 1;
        this.packets = [this.o.oack];
        this.transmit();
      } else this.step();
    });
  }

  private transmit(): void {
    for (const p of this.packets) this.o.t.send(p);
    this.timer?.refresh();
  }

  private timeout(): void {
    if (++this.attempts > this.o.retries) {
      this.finish(new Refused(ERR.UNDEFINED, `no answer after ${this.o.retries + 1} tries`));
      return;
    }
    this.transmit();
  }

  private message(msg: Buffer): void {
    if (msg.length < 4) return;
    const op = msg.readUInt16BE(0);
    if (op === OP.ERROR) {
      const e = decodeTftpSafe(msg);
      this.finish(
        new PeerError(
          `the client gave up: ${e?.op === OP.ERROR ? `${e.message} (code ${e.code})` : 'error'}`,
        ),
      );
    }
    if (op !== OP.ACK || msg.length !== 4) return;
    const ack = msg.readUInt16BE(2);
    // An ACK names the newest block received in order: everything up to it is done.
    for (let k = this.count - 1; k >= 0; k--) {
      if (((this.first + k) & 0xffff) === ack) {
        this.next = this.first + k + 1;
        this.attempts = 0;
        if (this.next > this.last) this.finish();
        else this.step();
        return;
      }
    }
  }

  /** Sends the window starting at `next`: at once from the read-ahead buffer, after a refill when it has to. */
  private step(): void {
    const { blksize, size } = this.o;
    const offset = (this.next - 1) * blksize;
    const want = Math.min(Math.min(this.o.window, this.last - this.next + 1) * blksize, size - offset);
    const c = this.cache;
    if (!this.o.data && (offset < c.at || offset + want > c.at + c.len)) {
      if (this.reading) return; // a repeated ACK while the buffer refills: the refill sends
      this.reading = true;
      this.o.read!(c.buf, offset).then(
        (len) => {
          this.reading = false;
          c.len = len;
          c.at = offset;
          this.sendWindow();
        },
        (e: Error) => this.finish(e),
      );
    } else this.sendWindow();
  }

  /**
   * The window's DATA packets, built in buffers kept for the whole transfer (one per window slot):
   * a slot is written again only after the client acknowledged what it held.
   */
  private sendWindow(): void {
    const { blksize, size } = this.o;
    const count = Math.min(this.o.window, this.last - this.next + 1);
    const offset = (this.next - 1) * blksize;
    const c = this.cache;
    const base = offset - c.at;
    const got = Math.min(Math.min(count * blksize, size - offset), c.len - base);
    const packets: Buffer[] = [];
    for (let k = 0; k < count; k++) {
      const from = k * blksize;
      const len = Math.max(0, Math.min(blksize, got - from));
      let slot = this.slots[k];
      if (!slot) {
        slot = Buffer.allocUnsafe(4 + blksize);
        this.slots[k] = slot;
      }
      slot.writeUInt16BE(OP.DATA, 0);
      slot.writeUInt16BE((this.next + k) & 0xffff, 2);
      c.buf.copy(slot, 4, base + from, base + from + len);
      packets.push(len === blksize ? slot : slot.subarray(0, 4 + len));
    }
    this.first = this.next;
    this.count = count;
    this.packets = packets;
    this.transmit();
  }
}

function decodeTftpSafe(msg: Buffer): TftpPacket | undefined {
  try {
    return decodeTftp(msg);
  } catch {
    return undefined;
  }
}
