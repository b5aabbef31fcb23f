/**
 * Saved network locations (manual 7.1 "share or NAS"): SMB shares by computer, share, folder and,
 * unless anonymous, user name and password. They are kept in the state folder (0600, passwords
 * included: the rescue system must reconnect without asking) and mounted on demand under a private
 * folder; `open` says how much room is left and warns when it is short.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RescueError } from '../engine/errors.ts';
import {
  type MountedShare,
  mountSmb,
  type SmbLocation,
  shareSpace,
  validateLocation,
} from '../engine/shares/smb.ts';

export interface Location extends SmbLocation {
  id: string;
  name: string;
  kind: 'smb';
}

/** What the API shows: never the password. */
export type LocationView = Omit<Location, 'password'> & { hasPassword: boolean; mounted: string | null };

export interface OpenedLocation {
  location: LocationView;
  path: string;
  method: MountedShare['method'];
  freeBytes: number | null;
  totalBytes: number | null;
  /** Less than LOW_SPACE_BYTES (or 5 %) free. */
  lowSpace: boolean;
}

const FILE = 'locations.json';
export const LOW_SPACE_BYTES = 10 * 1000 ** 3;

export class Locations {
  private readonly stateDir: string | undefined;
  private readonly mountRoot: string;
  private list: Location[] = [];
  private loaded = false;
  private readonly mounts = new Map<string, MountedShare>();

  constructor(opts: { stateDir?: string; mountRoot?: string } = {}) {
    this.stateDir = opts.stateDir;
    this.mountRoot = opts.mountRoot ?? join(tmpdir(), `rescue-shares-${process.pid}`);
  }

  private async load(): Promise<void> {
    if (this.loaded || !this.stateDir) {
      this.loaded = true;
      return;
    }
    const text = await fsp.readFile(join(this.stateDir, FILE), 'utf8').catch(() => '[]');
    try {
      this.list = JSON.parse(text) as Location[];
    } catch {
      this.list = [];
    }
    this.loaded = true;
  }

  private async save(): Promise<void> {
    if (!this.stateDir) return;
    await fsp.mkdir(this.stateDir, { recursive: true });
    const tmp = join(this.stateDir, `${FILE}.tmp`);
    await fsp.writeFile(tmp, JSON.stringify(this.list, null, 2), { mode: 0o600 });
    await fsp.rename(tmp, join(this.stateDir, FILE));
  }

  private view(l: Location): LocationView {
    const { password, ...rest } = l;
    return { ...rest, hasPassword: !!password, mounted: this.mounts.get(l.id)?.path ?? null };
  }

  async all(): Promise<LocationView[]> {
    await this.load();
    return this.list.map((l) => this.view(l));
  }

  async add(input: SmbLocation & { name?: string }): Promise<LocationView> {
    await this.load();
    validateLocation(input);
    const l: Location = {
      id: randomBytes(6).toString('hex'),
      kind: 'smb',
      name: input.name?.trim() || `${input.host}/${input.share}${input.folder ? `/${input.folder}` : ''}`,
      host: input.host,
      share: input.share,
      folder: input.folder || undefined,
      username: input.username || undefined,
      password: input.username ? input.password : undefined,
      domain: input.domain || undefined,
    };
    this.list.push(l);
    await this.save();
    return this.view(l);
  }

  async remove(id: string): Promise<void> {
    await this.load();
    const m = this.mounts.get(id);
    if (m) {
      this.mounts.delete(id);
      await m.unmount();
    }
    this.list = this.list.filter((l) => l.id !== id);
    await this.save();
  }

  /** Mounts it (once) and reports the folder and its free space. */
  async open(id: string): Promise<OpenedLocation> {
    await this.load();
    const l = this.list.find((x) => x.id === id);
    if (!l)
      throw new RescueError(
        'E_LOCATION_NOT_FOUND',
        `There is no saved network location ${id}`,
        'List them with GET /api/locations.',
      );
    let m = this.mounts.get(id);
    if (!m) {
      await fsp.mkdir(this.mountRoot, { recursive: true, mode: 0o700 });
      m = await mountSmb(l, this.mountRoot, id);
      this.mounts.set(id, m);
    }
    const space = await shareSpace(l);
    return {
      location: this.view(l),
      path: m.path,
      method: m.method,
      freeBytes: space?.free ?? null,
      totalBytes: space?.total ?? null,
      lowSpace: space
        ? space.free < Math.min(LOW_SPACE_BYTES, space.total * 0.05) || space.free < 1e9
        : false,
    };
  }

  async close(): Promise<void> {
    const all = [...this.mounts.values()];
    this.mounts.clear();
    for (const m of all) await m.unmount().catch(() => undefined);
    await fsp.rm(this.mountRoot, { recursive: true, force: true }).catch(() => undefined);
  }
}
