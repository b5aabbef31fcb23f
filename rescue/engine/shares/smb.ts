/**
 * Windows shares and NAS folders (SMB) as ordinary folders, so that images on them are read and
 * written like any other file. Where the kernel has the CIFS client (our rescue kernel), the share
 * is mounted with mount.cifs; where it has not (these development machines, some hosts), the same
 * share is mounted in user space through FUSE with smbnetfs (libsmbclient). Either way the engine
 * sees a path, and nothing else in it knows about networks.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../errors.ts';

const run = promisify(execFile);

export interface SmbLocation {
  host: string;
  share: string;
  /** A folder inside the share (relative, '/'-separated). */
  folder?: string;
  /** Absent: anonymous (guest) access. */
  username?: string;
  password?: string;
  domain?: string;
}

export interface MountedShare {
  /** The folder the location names, as a local path. */
  path: string;
  method: 'cifs' | 'smbnetfs';
  unmount(): Promise<void>;
}

/** A host name, or an IPv4/IPv6 address (with at least one digit: "." and ".." are path steps, not hosts). */
const HOST = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$|^\[?(?=[^\]]*[0-9A-Fa-f])[0-9A-Fa-f:.]+\]?$/;
/** A share name: no path separators, control characters (they would end a config line) or "." / "..". */
const SHARE = /^(?!\.{1,2}$)[^/\\\x00-\x1f<>:"|?*]{1,80}$/;
/** How long a share may take to answer the first listing. */
const CONNECT_TIMEOUT_MS = 20_000;

function invalid(what: string): RescueError {
  return new RescueError(
    'E_SHARE_INVALID',
    `The network location is not valid: ${what}`,
    'Give the computer (name or IP address), the share name and, optionally, a folder inside it.',
  );
}

/** Checks a location's fields: nothing in them can reach a command line as an option or a path escape. */
export function validateLocation(loc: SmbLocation): void {
  if (!HOST.test(loc.host)) throw invalid(`"${loc.host}" is not a computer name or IP address`);
  if (!SHARE.test(loc.share)) throw invalid(`"${loc.share}" is not a share name`);
  const folder = loc.folder ?? '';
  if (
    folder.split('/').some((p) => p === '..' || p === '.') ||
    /[\x00-\x1f]/.test(folder) ||
    folder.startsWith('/')
  )
    throw invalid(`the folder "${folder}" must be a plain path inside the share`);
  for (const [k, v] of Object.entries({ username: loc.username, password: loc.password, domain: loc.domain }))
    if (v !== undefined && /[\n\r\0]/.test(v)) throw invalid(`the ${k} contains a line break`);
}

export async function kernelHasCifs(): Promise<boolean> {
  const has = async () =>
    (await fsp.readFile('/proc/filesystems', 'utf8').catch(() => ''))
      .split('\n')
      .some((l) => l.trim().endsWith('cifs'));
  if (await has()) return true;
  await run('modprobe', ['-q', 'cifs']).catch(() => undefined);
  return has();
}

function quote(s: string): string {
  return `"${s.replace(/(["\\])/g, '\\$1')}"`;
}

async function listable(dir: string, loc: SmbLocation): Promise<void> {
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(
      () =>
        reject(
          new RescueError(
            'E_SHARE_UNREACHABLE',
            `//${loc.host}/${loc.share} did not answer within ${CONNECT_TIMEOUT_MS / 1000} s`,
            'Check the computer name, that it is switched on and on the network, and that file sharing is enabled on it.',
          ),
        ),
      CONNECT_TIMEOUT_MS,
    ).unref(),
  );
  try {
    await Promise.race([fsp.readdir(dir), timeout]);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM')
      throw new RescueError(
        'E_SHARE_LOGIN',
        `//${loc.host}/${loc.share} refused ${loc.username ? `the user ${loc.username}` : 'anonymous access'}`,
        'Check the user name and password (or ask for the share to allow guests).',
      );
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new RescueError(
        'E_SHARE_NOT_FOUND',
        `//${loc.host}/${loc.share}${loc.folder ? `/${loc.folder}` : ''} was not found (or the computer does not answer)`,
        'Check the computer name, the share name and the folder; the share must be enabled on that computer.',
      );
    throw e;
  }
}

/** Mounts a location under `mountRoot` (a private folder this process owns) and returns its folder. */
export async function mountSmb(loc: SmbLocation, mountRoot: string, id: string): Promise<MountedShare> {
  validateLocation(loc);
  const dir = join(mountRoot, id);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const sub = (loc.folder ?? '').split('/').filter(Boolean);
  if (await kernelHasCifs()) {
    const creds = join(mountRoot, `.${id}.credentials`);
    const opts = ['vers=3.0', 'uid=0', 'gid=0', 'file_mode=0600', 'dir_mode=0700'];
    if (loc.username) {
      await fsp.writeFile(
        creds,
        `username=${loc.username}\npassword=${loc.password ?? ''}\n${loc.domain ? `domain=${loc.domain}\n` : ''}`,
        { mode: 0o600 },
      );
      opts.push(`credentials=${creds}`);
    } else opts.push('guest');
    try {
      await run('mount', ['-t', 'cifs', `//${loc.host}/${loc.share}`, dir, '-o', opts.join(',')]);
    } catch (e) {
      const text = `${(e as { stderr?: string }).stderr ?? (e as Error).message}`.trim();
      throw new RescueError(
        /Permission denied|error\(13\)/.test(text) ? 'E_SHARE_LOGIN' : 'E_SHARE_MOUNT',
        `//${loc.host}/${loc.share} could not be mounted: ${text}`,
        'Check the computer, share, user name and password; the share must allow SMB 3.',
      );
    } finally {
      await fsp.rm(creds, { force: true });
    }
    const path = join(dir, ...sub);
    const unmount = async () => {
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      await fsp.rm(dir, { recursive: true, force: true });
    };
    try {
      await listable(path, loc);
    } catch (e) {
      await unmount();
      throw e;
    }
    return { path, method: 'cifs', unmount };
  }
  // User space: smbnetfs reads its settings from $HOME/.smb; this mount gets a HOME of its own.
  const home = join(mountRoot, `.${id}.home`);
  await fsp.mkdir(join(home, '.smb'), { recursive: true, mode: 0o700 });
  await fsp.writeFile(
    join(home, '.smb', 'smb.conf'),
    '[global]\n  client min protocol = SMB2\n  disable netbios = yes\n',
  );
  await fsp.writeFile(
    join(home, '.smb', 'smbnetfs.conf'),
    `smb_query_browsers false\nshow_hidden_hosts true\n${loc.username ? `auth ${quote(`${loc.host}/${loc.share}`)} ${loc.domain ? `${quote(loc.domain)} ` : ''}${quote(loc.username)} ${quote(loc.password ?? '')}\n` : ''}`,
    { mode: 0o600 },
  );
  try {
    await run('smbnetfs', [dir], { env: { ...process.env, HOME: home } });
  } catch (e) {
    await fsp.rm(home, { recursive: true, force: true });
    throw new RescueError(
      'E_SHARE_MOUNT',
      `//${loc.host}/${loc.share} could not be mounted (smbnetfs): ${(e as Error).message}`,
      'Install smbnetfs and fuse3 (scripts/host-setup.sh does), or use a system whose kernel has the CIFS client.',
    );
  }
  const unmount = async () => {
    await run('fusermount', ['-u', dir]).catch(() => run('fusermount', ['-uz', dir]));
    await fsp.rm(home, { recursive: true, force: true });
    await fsp.rm(dir, { recursive: true, force: true });
  };
  const path = join(dir, loc.host, loc.share, ...sub);
  try {
    await listable(path, loc);
  } catch (e) {
    await unmount();
    throw e;
  }
  return { path, method: 'smbnetfs', unmount };
}

/** Free and total bytes of a share as its server reports them (smbclient), when it tells. */
export async function shareSpace(loc: SmbLocation): Promise<{ free: number; total: number } | undefined> {
  validateLocation(loc);
  const dir = await fsp.mkdtemp('/tmp/rescue-smb-auth-');
  try {
    const auth = join(dir, 'auth');
    const args = [`//${loc.host}/${loc.share}`, '-c', 'du'];
    if (loc.username) {
      await fsp.writeFile(
        auth,
        `username = ${loc.username}\npassword = ${loc.password ?? ''}\n${loc.domain ? `domain = ${loc.domain}\n` : ''}`,
        { mode: 0o600 },
      );
      args.push('-A', auth);
    } else args.push('-N');
    const { stdout } = await run('smbclient', args, { timeout: CONNECT_TIMEOUT_MS });
    const m = /(\d+) blocks of size (\d+)\. (\d+) blocks available/.exec(stdout);
    if (!m) return undefined;
    return { total: Number(m[1]) * Number(m[2]), free: Number(m[3]) * Number(m[2]) };
  } catch {
    return undefined;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
