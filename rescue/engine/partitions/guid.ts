import { randomUUID } from 'node:crypto';
import { RescueError } from '../errors.ts';

/**
 * GUIDs as UEFI stores them: 16 bytes whose first three fields (32, 16, 16 bits) are little endian
 * and whose last 8 bytes are stored as written. The text form is the usual 8-4-4-4-12 hex, which we
 * always produce in upper case, as sfdisk and sgdisk print it.
 */
export const GUID_SIZE = 16;
export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

const GUID_TEXT = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Byte order of the text digits pairs: on-disk position of each of the 16 bytes of the text form. */
const TEXT_TO_DISK = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15] as const;

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

export function isGuid(text: string): boolean {
  return GUID_TEXT.test(text);
}

/** Reads the mixed-endian GUID at `offset`; the caller guarantees 16 bytes are there. */
export function readGuid(bytes: Uint8Array, offset: number): string {
  let s = '';
  for (let i = 0; i < GUID_SIZE; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += hex2(bytes[offset + TEXT_TO_DISK[i]]);
  }
  return s.toUpperCase();
}

/** Writes `guid` (text form, any case) mixed-endian at `offset`. */
export function writeGuid(bytes: Uint8Array, offset: number, guid: string): void {
  if (!isGuid(guid)) {
    throw new RescueError('E_BAD_GUID', `"${guid}" is not a GUID`, 'Give a GUID as 8-4-4-4-12 hex digits.');
  }
  const digits = guid.replaceAll('-', '');
  for (let i = 0; i < GUID_SIZE; i++) {
    bytes[offset + TEXT_TO_DISK[i]] = Number.parseInt(digits.slice(i * 2, i * 2 + 2), 16);
  }
}

export function guidToBytes(guid: string): Uint8Array {
  const out = new Uint8Array(GUID_SIZE);
  writeGuid(out, 0, guid);
  return out;
}

export function isZeroGuid(bytes: Uint8Array, offset: number): boolean {
  for (let i = 0; i < GUID_SIZE; i++) if (bytes[offset + i] !== 0) return false;
  return true;
}

/** A new random (version 4) GUID in upper case. Not pure: used by planners, never by codecs. */
export function randomGuid(): string {
  return randomUUID().toUpperCase();
}
