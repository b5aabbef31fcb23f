/**
 * LZNT1, the compression of NTFS compressed files (and RtlDecompressBuffer's
 * COMPRESSION_FORMAT_LZNT1): a sequence of chunks, each expanding to 4096 bytes, each either stored
 * or LZ77-coded with flag bytes and 16-bit back references whose offset/length split depends on the
 * position inside the chunk. Pure codec; damaged input is corrupt(), never a read out of bounds.
 */
import { corrupt } from '../../errors.ts';

export const LZNT1 = {
  CHUNK_SIZE: 4096,
  HEADER_SIZE: 2,
  /** Bits 0-11 of a chunk header: bytes of data after the header, minus one. */
  LENGTH_MASK: 0x0fff,
  FLAG_COMPRESSED: 0x8000,
} as const;

/**
 * Expands `input` into exactly `outSize` bytes (a compression unit); what the chunks do not cover,
 * and the tail of a chunk that ends early, is zeros, as NTFS defines it.
 */
export function lznt1Decompress(input: Uint8Array, outSize: number, what = 'LZNT1 data'): Buffer {
  const out = Buffer.alloc(outSize);
  let ip = 0;
  let chunkStart = 0;
  while (ip + LZNT1.HEADER_SIZE <= input.length && chunkStart < outSize) {
    const header = input[ip] | (input[ip + 1] << 8);
    if (header === 0) break;
    const end = ip + LZNT1.HEADER_SIZE + (header & LZNT1.LENGTH_MASK) + 1;
    if (end > input.length) throw corrupt(what, `chunk at ${ip} runs past the compressed data`);
    const chunkEnd = Math.min(chunkStart + LZNT1.CHUNK_SIZE, outSize);
    let p = ip + LZNT1.HEADER_SIZE;
    let o = chunkStart;
    if (!(header & LZNT1.FLAG_COMPRESSED)) {
      const n = Math.min(end - p, chunkEnd - o);
      out.set(input.subarray(p, p + n), o);
    } else {
      while (p < end && o < chunkEnd) {
        const flags = input[p++];
        for (let bit = 0; bit < 8 && p < end && o < chunkEnd; bit++) {
          if (!(flags & (1 << bit))) {
            out[o++] = input[p++];
            continue;
          }
          if (p + 2 > end) throw corrupt(what, `back reference at ${p} is truncated`);
          const token = input[p] | (input[p + 1] << 8);
          p += 2;
          const pos = o - chunkStart;
          // The further into the chunk, the more bits the offset takes from the length.
          let lengthShift = 0;
          for (let i = pos - 1; i >= 0x10; i >>= 1) lengthShift++;
          const back = (token >> (12 - lengthShift)) + 1;
          const length = (token & (0x0fff >> lengthShift)) + 3;
          if (pos === 0 || back > pos)
            throw corrupt(what, `back reference ${back} bytes before position ${pos}`);
          for (let k = 0; k < length && o < chunkEnd; k++, o++) out[o] = out[o - back];
        }
      }
    }
    chunkStart += LZNT1.CHUNK_SIZE;
    ip = end;
  }
  return out;
}
