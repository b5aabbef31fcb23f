/** The server's API as the UI uses it: JSON in and out, the CSRF token on every POST. */

export interface ApiErrorBody {
  code: string;
  message: string;
  remedy: string;
  details: Record<string, unknown> | null;
}

export class ApiError extends Error {
  readonly code: string;
  readonly remedy: string;
  readonly status: number;
  readonly details: Record<string, unknown> | null;
  constructor(status: number, e: ApiErrorBody) {
    super(e.message);
    this.status = status;
    this.code = e.code;
    this.remedy = e.remedy;
    this.details = e.details;
  }
}

let csrf = '';

export function setCsrf(token: string): void {
  csrf = token;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let r: Response;
  try {
    r = await fetch(path, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(method === 'GET' ? {} : { 'x-rescue-csrf': csrf }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, {
      code: 'E_OFFLINE',
      message: 'The rescue system does not answer',
      remedy: 'Check the network cable, or wait: it may be restarting.',
      details: null,
    });
  }
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok)
    throw new ApiError(
      r.status,
      data?.error ?? { code: `HTTP_${r.status}`, message: r.statusText, remedy: '', details: null },
    );
  return data as T;
}

export const api = {
  get: <T>(path: string) => call<T>('GET', path),
  post: <T>(path: string, body: unknown = {}) => call<T>('POST', path, body),
};

// ---- shapes the server answers with (rescue/server) ----

export interface Session {
  local: boolean;
  paired: boolean;
  csrf: string | null;
  /** Local screen only, when other computers may connect: where, and the pairing PIN. */
  remote?: { url: string; pin: string } | null;
  /** Restart and shut down are offered (on the rescue system itself). */
  power?: boolean;
}

let session: Session | null = null;

export function setSession(s: Session): void {
  session = s;
}

export function currentSession(): Session | null {
  return session;
}

export interface FsReport {
  type: string;
  label?: string;
  usedBytes?: number;
  size?: number;
}

export interface PartitionReport {
  number: number;
  start: number;
  size: number;
  typeName?: string;
  name?: string;
  devicePath?: string;
  fs?: FsReport;
  mounts?: string[];
  inUse?: boolean;
  inUseReasons?: string[];
}

export interface DiskReport {
  path: string;
  kind: 'device' | 'image';
  model?: string;
  vendor?: string;
  serial?: string;
  size: number;
  transport?: string;
  removable?: boolean;
  readOnly?: boolean;
  table: 'gpt' | 'mbr' | 'none' | 'unknown';
  error?: { code: string; message: string; remedy: string };
  fs?: FsReport;
  partitions: PartitionReport[];
  mounts?: string[];
  inUse?: boolean;
  inUseReasons?: string[];
}

export interface ImagePoint {
  path: string;
  imageId: string;
  type: string;
  created: string;
  encrypted: boolean;
  bytes: number;
}

export interface ImageChain {
  chainId: string;
  folder: string;
  points: ImagePoint[];
}

export interface ImageInfo {
  path: string;
  kind: 'disk' | 'partition' | 'system';
  name: string;
  comment: string;
  created: string;
  encrypted: boolean;
  sequence: number;
  disks: {
    index: number;
    source: { path: string; model: string | null; serial: string | null; size: number };
    table: string | null;
    partitions: {
      number: number;
      start: number;
      size: number;
      fs: string | null;
      label: string | null;
      usedBytes: number | null;
    }[];
  }[];
  chain: {
    sequence: number;
    type: string;
    created: string;
    file: string;
    usable: boolean;
    why: string | null;
  }[];
}

export interface Progress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  rate: number;
  etaSeconds: number | null;
}

export interface LogLine {
  time: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface Job {
  id: string;
  kind: string;
  summary: string;
  state: 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
  created: string;
  started: string | null;
  finished: string | null;
  waitingFor: string[];
  phase: string | null;
  progress: Progress | null;
  log: LogLine[];
  result: Record<string, unknown> | null;
  error: ApiErrorBody | null;
}
