/**
 * Raw (no pre/post inversion) CRC update functions in the form ext4 and e2fsprogs use them:
 * the caller passes the running value, exactly like ext2fs_crc32c_le() and ext2fs_crc16().
 */

function makeTable(poly: number, bits: 16 | 32): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[n] = bits === 16 ? c & 0xffff : c >>> 0;
  }
  return t;
}

const CRC32C_TABLE = makeTable(0x82f63b78, 32);
const CRC16_TABLE = makeTable(0xa001, 16);

/** CRC-32C (Castagnoli), reflected, continuing from `crc` without inversion. */
export function crc32cUpdate(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = crc >>> 0;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}

/** The conventional CRC-32C (init ~0, final inversion) — what iSCSI and btrfs call crc32c. */
export function crc32c(data: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, data) >>> 0;
}

/** CRC-16 (ANSI, reflected polynomial 0xA001), continuing from `crc` — ext4's gdt_csum. */
export function crc16Update(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = crc & 0xffff;
  for (let i = start; i < end; i++) c = (CRC16_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8)) & 0xffff;
  return c;
}
