/**
 * A read-only TFTP server (RFC 1350) for network boot: blksize (RFC 2348, capped by the interface's
 * MTU and per client), tsize and timeout (RFC 2349), windowsize (RFC 7440), block numbers that roll
 * over past 65535, many transfers at once (each on its own port, as RFC 1350 has it), and files
 * confined to the root: `..`, and symbolic links leading out, are refused; a leading `/` or `\` means
 * the root (boot ROMs send both).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { type FileHandle, open, realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
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
  if (rel === '' || rel.split('/').some((c) => c === '..'))
    throw new Refused(ERR.ACCESS, `"${requested}" is outside the boot folder`);
  const base = await realpath(root);
  let real: string;
  try {
    real = await realpath(posix.join(base, rel));
  } catch {
    throw new Refused(ERR.NOT_FOUND, `"${requested}" not found`);
  }
  if (real !== base && !real.startsWith(`${base}/`))
    throw new Refused(ERR.ACCESS, `"${requested}" leads outside the boot folder`);
  if (!(await stat(real)).isFile()) throw new Refused(ERR.NOT_FOUND, `"${requested}" is not a file`);
  return real;
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

export class TftpServer {
  private readonly o: Required<Omit<TftpServerOptions, 'onEvent' | 'clientBlksize'>> & TftpServerOptions;
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
    let fh: FileHandle | undefined;
    try {
      if (p.op === OP.WRQ) throw new Refused(ERR.ACCESS, 'this server is read-only');
      if (p.mode !== 'octet' && p.mode !== 'netascii')
        throw new Refused(ERR.ILLEGAL, `mode "${p.mode}" is not supported`);
      const path = await resolveInRoot(this.o.root, file);
      fh = await open(path, 'r');
      await this.send(t, fh, p, rinfo, client);
    } catch (e) {
      const code = e instanceof Refused ? e.code : ERR.UNDEFINED;
      const reason = (e as Error).message;
      if (!(e instanceof PeerError)) t.send(encodeTftp({ op: OP.ERROR, code, message: reason }));
      this.emit({ type: 'error', client, file, reason });
    } finally {
      await fh?.close();
      // Give the last datagram time to leave before the socket goes.
      setTimeout(() => {
        if (this.transfers.delete(t)) t.close();
      }, 100).unref();
    }
  }

  private async send(
    t: Socket,
    fh: FileHandle,
    req: Extract<TftpPacket, { op: 1 | 2 }>,
    rinfo: RemoteInfo,
    client: string,
  ): Promise<void> {
    const started = Date.now();
    let data: Buffer | undefined;
    let size = (await fh.stat()).size;
    if (req.mode === 'netascii') {
      data = toNetascii(await fh.readFile());
      size = data.length;
    }
    const cap = Math.min(this.o.maxBlksize, this.o.clientBlksize?.[rinfo.address] ?? 65464);
    const accepted = negotiate(req.options, size, { maxBlksize: cap, maxWindow: this.o.maxWindow });
    const blksize = accepted.blksize ? Number(accepted.blksize) : 512;
    const window = accepted.windowsize ? Number(accepted.windowsize) : 1;
    const timeoutMs = accepted.timeout ? Number(accepted.timeout) * 1000 : this.o.timeoutMs;
    this.emit({ type: 'start', client, file: req.filename, options: accepted });
    const inbox = new Inbox(t);
    try {
      if (Object.keys(accepted).length > 0) {
        await this.exchange(t, inbox, [encodeTftp({ op: OP.OACK, options: accepted })], timeoutMs, (ack) =>
          ack === 0 ? 0 : undefined,
        );
      }
      // Blocks are numbered 1…last; the last is shorter than blksize (empty if size is a multiple).
      const last = Math.floor(size / blksize) + 1;
      let next = 1;
      const buf = Buffer.alloc(blksize * window);
      while (next <= last) {
        const count = Math.min(window, last - next + 1);
        const offset = (next - 1) * blksize;
        const want = Math.min(count * blksize, size - offset);
        let got = 0;
        if (data) got = data.copy(buf, 0, offset, offset + want);
        else if (want > 0) got = (await fh.read(buf, 0, want, offset)).bytesRead;
        const packets: Buffer[] = [];
        for (let k = 0; k < count; k++) {
          const from = k * blksize;
          const chunk = buf.subarray(from, Math.min(from + blksize, got));
          packets.push(encodeTftp({ op: OP.DATA, block: (next + k) & 0xffff, data: chunk }));
        }
        const first = next;
        // An ACK names the newest block received in order: everything up to it is done.
        const acked = await this.exchange(t, inbox, packets, timeoutMs, (ack) => {
          for (let k = count - 1; k >= 0; k--) if (((first + k) & 0xffff) === ack) return first + k;
          return undefined;
        });
        next = acked + 1;
      }
      this.emit({
        type: 'done',
        client,
        file: req.filename,
        bytes: size,
        ms: Date.now() - started,
        options: accepted,
      });
    } finally {
      inbox.close();
    }
  }

  /**
   * Sends `packets`, waits for an ACK that `accept` maps to a block (ignoring others), resending on
   * timeout up to `retries` times. Returns the accepted block.
   */
  private async exchange(
    t: Socket,
    inbox: Inbox,
    packets: Buffer[],
    timeoutMs: number,
    accept: (ack: number) => number | undefined,
  ): Promise<number> {
    for (let attempt = 0; attempt <= this.o.retries; attempt++) {
      for (const p of packets) t.send(p);
      const until = Date.now() + timeoutMs;
      for (;;) {
        const msg = await inbox.next(until - Date.now());
        if (!msg) break; // timeout: send again
        if (msg.op === OP.ERROR) throw new PeerError(`the client gave up: ${msg.message} (code ${msg.code})`);
        if (msg.op !== OP.ACK) continue;
        const block = accept(msg.block);
        if (block !== undefined) return block;
      }
    }
    throw new Refused(ERR.UNDEFINED, `no answer after ${this.o.retries + 1} tries`);
  }
}

/** The client stopped the transfer itself: no ERROR is sent back. */
class PeerError extends Error {}

/** Datagrams from the client, waited for one at a time. */
class Inbox {
  private readonly queue: TftpPacket[] = [];
  private waiter?: (p: TftpPacket | undefined) => void;
  private readonly t: Socket;
  private readonly onMessage = (msg: Buffer) => {
    let p: TftpPacket;
    try {
      p = decodeTftp(msg);
    } catch {
      return;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(p);
    } else this.queue.push(p);
  };

  constructor(t: Socket) {
    this.t = t;
    t.on('message', this.onMessage);
  }

  next(ms: number): Promise<TftpPacket | undefined> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (ms <= 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(undefined);
      }, ms);
      this.waiter = (p) => {
        clearTimeout(timer);
        resolve(p);
      };
    });
  }

  close(): void {
    this.t.off('message', this.onMessage);
  }
}
