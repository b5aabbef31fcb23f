/**
 * NTFS data runs ("mapping pairs"): where the clusters of a non-resident attribute live.
 * Each run is a header byte (low nibble: bytes of the length, high nibble: bytes of the LCN
 * delta), the length (unsigned), then the LCN as a signed delta from the previous run's LCN.
 * A run without LCN bytes is sparse (reads as zeros, owns no clusters). A zero byte ends the list.
 * Pure codec.
 */
import { corrupt } from '../errors.ts';

export interface DataRun {
  /** First virtual cluster of the run within the attribute. */
  vcn: number;
  /** First logical cluster on the volume, or null for a sparse run. */
  lcn: number | null;
  length: number;
}

/** Reads `n` bytes little-endian as a signed (two's complement) or unsigned integer. */
function readVarInt(b: Uint8Array, off: number, n: number, signed: boolean): bigint {
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[off + i]);
  if (signed && n > 0 && b[off + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
  return v;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Decodes mapping pairs starting at `startVcn` (the attribute extent's lowest VCN). Stops at the
 * terminating zero byte; running off the end of `pairs` without it is corruption, as are
 * non-positive lengths, negative LCNs and numbers beyond 2^53.
 */
export function decodeRunlist(pairs: Uint8Array, startVcn: number, what: string): DataRun[] {
  const runs: DataRun[] = [];
  let off = 0;
  let vcn = BigInt(startVcn);
  let lcn = 0n;
  while (off < pairs.length) {
    const header = pairs[off];
    if (header === 0) return runs;
    const lenBytes = header & 0x0f;
    const lcnBytes = header >> 4;
    if (lenBytes === 0 || lenBytes > 8 || lcnBytes > 8) {
      throw corrupt(what, `run header 0x${header.toString(16)} at ${off}`);
    }
    if (off + 1 + lenBytes + lcnBytes > pairs.length)
      throw corrupt(what, `run at ${off} overruns the attribute`);
    const length = readVarInt(pairs, off + 1, lenBytes, true);
    if (length <= 0n || length > MAX_SAFE) throw corrupt(what, `run at ${off} has length ${length}`);
    let runLcn: number | null = null;
    if (lcnBytes > 0) {
      lcn += readVarInt(pairs, off + 1 + lenBytes, lcnBytes, true);
      if (lcn < 0n || lcn > MAX_SAFE) throw corrupt(what, `run at ${off} starts at cluster ${lcn}`);
      runLcn = Number(lcn);
    }
    runs.push({ vcn: Number(vcn), lcn: runLcn, length: Number(length) });
    vcn += length;
    if (vcn > MAX_SAFE) throw corrupt(what, 'runs add up beyond 2^53 clusters');
    off += 1 + lenBytes + lcnBytes;
  }
  throw corrupt(what, 'mapping pairs have no terminator');
}

/** Smallest little-endian two's complement encoding of `v`. */
function encodeVarInt(v: bigint, signed: boolean): number[] {
  const out: number[] = [];
  let x = v;
  for (;;) {
    const byte = Number(x & 0xffn);
    out.push(byte);
    x >>= 8n;
    if (signed) {
      if ((x === 0n && !(byte & 0x80)) || (x === -1n && byte & 0x80)) return out;
    } else if (x === 0n) {
      return out;
    }
  }
}

/**
 * Encodes runs as mapping pairs (inverse of decodeRunlist; lengths are written as signed, as
 * Windows does, so a length with the top bit set gets an extra zero byte). Used by tests and by
 * fixtures that patch images.
 */
export function encodeRunlist(runs: readonly DataRun[]): Buffer {
  const bytes: number[] = [];
  let prev = 0n;
  for (const r of runs) {
    const len = encodeVarInt(BigInt(r.length), true);
    let delta: number[] = [];
    if (r.lcn !== null) {
      delta = encodeVarInt(BigInt(r.lcn) - prev, true);
      prev = BigInt(r.lcn);
    }
    bytes.push((delta.length << 4) | len.length, ...len, ...delta);
  }
  bytes.push(0);
  return Buffer.from(bytes);
}

/** Sum of run lengths (the VCNs the runs cover). */
export function runlistClusters(runs: readonly DataRun[]): number {
  let n = 0;
  for (const r of runs) n += r.length;
  return n;
}
