/**
 * Who may use the API. The local screen (loopback) may; any other host must first pair: type the
 * 6-digit PIN that the local screen and `rescue serve` show, and get a session cookie for it.
 * PIN attempts are rate-limited per address, and after too many failures in all the PIN changes
 * (a brute-force run over the LAN cannot just keep trying). Every state-changing request —
 * loopback included, since any web page the local browser opens could post to 127.0.0.1 — must
 * carry the session's CSRF token in a header that cross-site pages cannot set without CORS, which
 * this server never grants.
 */
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'rescue_session';
export const CSRF_HEADER = 'x-rescue-csrf';

/** Failed PIN attempts one address may make per window before it must wait. */
const MAX_FAILURES_PER_ADDRESS = 5;
const FAILURE_WINDOW_MS = 5 * 60 * 1000;
/** Failures from all addresses after which the PIN is replaced by a new one. */
const MAX_FAILURES_PER_PIN = 20;
const SESSION_LIFETIME_MS = 12 * 60 * 60 * 1000;

export interface Session {
  token: string;
  csrf: string;
  address: string;
  created: number;
}

export type PairOutcome =
  | { ok: true; session: Session }
  | { ok: false; status: 403 | 429; code: string; message: string; retryAfterSeconds?: number };

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

function newPin(): string {
  return String(randomInt(0, 1_000_000)).padStart(6, '0');
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Pairing {
  private currentPin: string;
  private readonly sessions = new Map<string, Session>();
  private readonly failures = new Map<string, number[]>();
  private failuresForPin = 0;
  /** The loopback client's CSRF token (the kiosk needs no pairing, but does need this). */
  readonly localCsrf = randomBytes(24).toString('base64url');
  private readonly onPinChange: (pin: string) => void;
  private readonly now: () => number;

  constructor(opts: { pin?: string; onPinChange?: (pin: string) => void; now?: () => number } = {}) {
    this.currentPin = opts.pin ?? newPin();
    this.onPinChange = opts.onPinChange ?? (() => {});
    this.now = opts.now ?? Date.now;
  }

  get pin(): string {
    return this.currentPin;
  }

  /** The session a cookie names, if it is valid. */
  session(token: string | undefined): Session | undefined {
    if (!token) return undefined;
    const s = this.sessions.get(token);
    if (!s) return undefined;
    if (this.now() - s.created > SESSION_LIFETIME_MS) {
      this.sessions.delete(token);
      return undefined;
    }
    return s;
  }

  /** Exchanges a PIN for a session, with the rate limits. */
  pair(address: string, pin: unknown): PairOutcome {
    const now = this.now();
    const recent = (this.failures.get(address) ?? []).filter((t) => now - t < FAILURE_WINDOW_MS);
    if (recent.length >= MAX_FAILURES_PER_ADDRESS) {
      const retry = Math.ceil((recent[0] + FAILURE_WINDOW_MS - now) / 1000);
      return {
        ok: false,
        status: 429,
        code: 'E_PAIRING_LOCKED',
        message: `Too many wrong PINs from ${address}: wait ${retry} s before trying again`,
        retryAfterSeconds: retry,
      };
    }
    if (typeof pin === 'string' && /^\d{6}$/.test(pin) && sameText(pin, this.currentPin)) {
      this.failures.delete(address);
      const session: Session = {
        token: randomBytes(32).toString('base64url'),
        csrf: randomBytes(24).toString('base64url'),
        address,
        created: now,
      };
      this.sessions.set(session.token, session);
      return { ok: true, session };
    }
    recent.push(now);
    this.failures.set(address, recent);
    if (++this.failuresForPin >= MAX_FAILURES_PER_PIN) {
      this.failuresForPin = 0;
      this.currentPin = newPin();
      this.onPinChange(this.currentPin);
    }
    return {
      ok: false,
      status: 403,
      code: 'E_PAIRING_PIN',
      message: 'That PIN is not the one shown on the rescue screen',
    };
  }

  /** Ends a session (log out). */
  forget(token: string | undefined): void {
    if (token) this.sessions.delete(token);
  }

  csrfMatches(expected: string, given: string | undefined): boolean {
    return given !== undefined && sameText(expected, given);
  }
}
