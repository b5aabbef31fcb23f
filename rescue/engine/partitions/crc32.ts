import { crc32 as zlibCrc32 } from 'node:zlib';

/**
 * CRC-32 as the UEFI specification uses it for GPT headers and entry arrays: the IEEE 802.3
 * polynomial, reflected, initial value and final XOR 0xFFFFFFFF (the same CRC as zlib and Ethernet).
 * zlib's native implementation is pure and fast; the entry array of a 4Kn disk with many entries is
 * hundreds of KiB, so a table loop in JS would be the slow part of reading a table.
 */
export function crc32(data: Uint8Array): number {
  return zlibCrc32(data) >>> 0;
}
