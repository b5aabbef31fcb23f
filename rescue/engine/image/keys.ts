/**
 * Passwords → keys. scrypt is memory-hard, so guessing passwords against a stolen image costs
 * 128 MiB and ~0.3 s per guess. The key check in the header lets a reader reject a wrong password
 * before it touches any chunk, without revealing anything about the key.
 */
import { createHmac, scrypt, timingSafeEqual } from 'node:crypto';
import { passwordInvalid } from './failures.ts';
import {
  GCM,
  KEY_CHECK_LABEL,
  MAX_PASSWORD_CHARS,
  MIN_PASSWORD_CHARS,
  SCRYPT_DEFAULTS,
  SCRYPT_LIMITS,
  type ScryptParams,
} from './types.ts';

/** scrypt needs 128 · N · r bytes (plus p lanes); Node refuses anything above maxmem. */
export function scryptMemory(p: ScryptParams): number {
  return 128 * 2 ** p.logN * p.r * p.p;
}

export function scryptParamsAcceptable(p: ScryptParams): boolean {
  return (
    Number.isInteger(p.logN) &&
    Number.isInteger(p.r) &&
    Number.isInteger(p.p) &&
    p.logN >= SCRYPT_LIMITS.minLogN &&
    p.logN <= SCRYPT_LIMITS.maxLogN &&
    p.r >= 1 &&
    p.r <= SCRYPT_LIMITS.maxR &&
    p.p >= 1 &&
    p.p <= SCRYPT_LIMITS.maxP &&
    scryptMemory(p) <= SCRYPT_LIMITS.maxMemory
  );
}

/**
 * The bytes scrypt is fed: the password in Unicode NFC, UTF-8. NFC makes "é" typed as one code
 * point (most keyboards) and as e + combining accent (some input methods) the same password.
 */
export function passwordBytes(password: string, image?: string): Buffer {
  if (typeof password !== 'string') throw passwordInvalid('not text', image);
  const normalized = password.normalize('NFC');
  const chars = [...normalized].length;
  if (chars < MIN_PASSWORD_CHARS) throw passwordInvalid('it is empty', image);
  if (chars > MAX_PASSWORD_CHARS)
    throw passwordInvalid(`it has ${chars} characters; at most ${MAX_PASSWORD_CHARS} are allowed`, image);
  return Buffer.from(normalized, 'utf8');
}

/** Throws E_PASSWORD_INVALID unless the password has 1..64 characters. */
export function validatePassword(password: string, image?: string): void {
  passwordBytes(password, image);
}

export async function deriveKey(
  password: string,
  salt: Buffer,
  params: ScryptParams = SCRYPT_DEFAULTS,
): Promise<Buffer> {
  const pw = passwordBytes(password);
  const N = 2 ** params.logN;
  return new Promise<Buffer>((resolve, reject) => {
    scrypt(
      pw,
      salt,
      GCM.KEY_BYTES,
      { N, r: params.r, p: params.p, maxmem: 2 * scryptMemory(params) },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

export function keyCheck(key: Buffer, imageId: Buffer): Buffer {
  return createHmac('sha256', key).update(KEY_CHECK_LABEL, 'utf8').update(imageId).digest();
}

export function keyMatches(key: Buffer, imageId: Buffer, stored: Buffer): boolean {
  const mine = keyCheck(key, imageId);
  return stored.length === mine.length && timingSafeEqual(mine, stored);
}
