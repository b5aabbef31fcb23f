import { existsSync } from 'node:fs';
import { RescueError } from '../errors.ts';
import { loadFfiRs } from '../native.ts';
import { devNodeOf, readSysDir, readSysNumber, readSysString } from './sysfs.ts';

/**
 * Hot-plug of disks and partitions. Primary: a libudev monitor (through ffi-rs, no compiled addon
 * of our own). Fallback: diffing /sys/class/block once a second.
 *
 * Which netlink source: libudev can listen to "udev" (events re-broadcast by systemd-udevd after
 * its rules ran, so /dev/disk/by-* links exist) or "kernel" (the raw uevents). Without a running
 * udevd the "udev" source is silently dead — libudev itself disables it when /run/udev/control is
 * missing — so "auto" takes "udev" only when that file exists and "kernel" otherwise. The rescue
 * system may not run udevd at all; devtmpfs creates the /dev node before the kernel sends the
 * uevent, so the kernel source is enough for us.
 *
 * Why a timer: Node cannot add a foreign file descriptor (a netlink socket) to its event loop
 * without a native addon — net.Socket only adopts TCP/pipe/TTY fds — and blocking in poll() through
 * ffi-rs's runInNewThread would pin one of libuv's four thread-pool workers (file I/O) for the
 * watcher's lifetime. The monitor socket is non-blocking, so udev_monitor_receive_device returns
 * NULL/EAGAIN at once when nothing is queued; draining it every 250 ms costs a few calls and adds at
 * most that much latency to events that happen on human time scales. The kernel queues what
 * arrives in between on the socket.
 */

export interface BlockEvent {
  action: 'add' | 'remove' | 'change';
  /** Kernel name: sdb, sdb1, loop3p2. */
  name: string;
  /** /dev node. */
  devnode: string;
  devtype: 'disk' | 'partition';
}

export interface WatchOptions {
  signal: AbortSignal;
  /** 'auto' (default): libudev, else polling. 'udev' fails instead of falling back. */
  mode?: 'auto' | 'udev' | 'poll';
  /** libudev netlink source; 'auto' (default) picks what delivers events here (see above). */
  source?: 'auto' | 'udev' | 'kernel';
  /** Default 'libudev.so.1' (found by the dynamic loader). */
  libudevPath?: string;
  /** How often the libudev monitor is drained; default 250 ms. */
  receiveIntervalMs?: number;
  /** How often sysfs is compared in poll mode; default 1000 ms. */
  pollIntervalMs?: number;
  /** sysfs root for poll mode; default /sys. */
  sysRoot?: string;
  /** Errors thrown by onEvent, and monitor errors that are not "nothing queued". Default: ignored. */
  onError?: (error: unknown) => void;
}

export interface WatchResult {
  mode: 'udev' | 'poll';
  /** In udev mode: the netlink source listened to. */
  source?: 'udev' | 'kernel';
  /** Why this mode/source was chosen, in words. */
  reason?: string;
}

const UDEVD_CONTROL = '/run/udev/control';
const DEFAULT_RECEIVE_MS = 250;
const DEFAULT_POLL_MS = 1000;
/** Bounds one drain so a flood of events cannot stall the event loop; the rest waits for the next tick. */
const MAX_EVENTS_PER_DRAIN = 512;
const EAGAIN = 11;

type FfiRs = typeof import('ffi-rs');
type External = import('ffi-rs').JsExternal;

function asAction(s: string | undefined): BlockEvent['action'] | undefined {
  return s === 'add' || s === 'remove' || s === 'change' ? s : undefined;
}

function asDevtype(s: string | undefined): BlockEvent['devtype'] | undefined {
  return s === 'disk' || s === 'partition' ? s : undefined;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

let librarySerial = 0;

/**
 * libudev bound through ffi-rs. Each watcher opens its own library key so that closing one watcher
 * never unloads the library under another (dlopen counts references).
 */
class Libudev {
  private readonly ffi: FfiRs;
  private readonly key: string;
  private closed = false;

  private constructor(ffi: FfiRs, key: string) {
    this.ffi = ffi;
    this.key = key;
  }

  static async open(path: string): Promise<Libudev> {
    let ffi: FfiRs;
    try {
      ffi = await loadFfiRs();
    } catch (e) {
      throw new Error(`the ffi-rs native module could not be loaded (${message(e)})`);
    }
    const key = `rescue-libudev-${++librarySerial}`;
    try {
      ffi.open({ library: key, path });
    } catch (e) {
      throw new Error(`libudev could not be loaded from ${path} (${message(e)})`);
    }
    return new Libudev(ffi, key);
  }

  private call(funcName: string, retType: number, paramsType: number[], paramsValue: unknown[]): unknown {
    return this.ffi.load({ library: this.key, funcName, retType, paramsType, paramsValue });
  }

  ptr(funcName: string, args: External[] = []): External | undefined {
    const T = this.ffi.DataType;
    const p = this.call(
      funcName,
      T.External,
      args.map(() => T.External),
      args,
    ) as External;
    return this.ffi.isNullPointer(p) ? undefined : p;
  }

  /** A `const char *` getter on a udev object; NULL becomes undefined (ffi-rs's String type would crash on NULL). */
  str(funcName: string, obj: External): string | undefined {
    const p = this.ptr(funcName, [obj]);
    if (p === undefined) return undefined;
    const T = this.ffi.DataType;
    return this.ffi.restorePointer({
      retType: [T.String],
      paramsValue: this.ffi.wrapPointer([p]),
    })[0] as string;
  }

  newMonitor(udev: External, source: string): External | undefined {
    const T = this.ffi.DataType;
    const p = this.call(
      'udev_monitor_new_from_netlink',
      T.External,
      [T.External, T.String],
      [udev, source],
    ) as External;
    return this.ffi.isNullPointer(p) ? undefined : p;
  }

  /** Subsystem "block", any devtype: libudev takes NULL for "any", passed as a zero machine word. */
  filterBlock(monitor: External): number {
    const T = this.ffi.DataType;
    return this.call(
      'udev_monitor_filter_add_match_subsystem_devtype',
      T.I32,
      [T.External, T.String, T.I64],
      [monitor, 'block', 0],
    ) as number;
  }

  int(funcName: string, obj: External): number {
    const T = this.ffi.DataType;
    return this.call(funcName, T.I32, [T.External], [obj]) as number;
  }

  /** udev_monitor_receive_device with errno: NULL + EAGAIN means "nothing queued". */
  receive(monitor: External): { device: External | undefined; errno: number } {
    const T = this.ffi.DataType;
    const r = this.ffi.load({
      library: this.key,
      funcName: 'udev_monitor_receive_device',
      retType: T.External,
      paramsType: [T.External],
      paramsValue: [monitor],
      errno: true,
    }) as unknown as { value: External; errnoCode: number };
    return { device: this.ffi.isNullPointer(r.value) ? undefined : r.value, errno: r.errnoCode };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ffi.close(this.key);
  }
}

function udevdRunning(): boolean {
  return existsSync(UDEVD_CONTROL);
}

async function startUdev(
  onEvent: (e: BlockEvent) => void,
  opts: WatchOptions,
): Promise<{ source: 'udev' | 'kernel'; reason: string }> {
  const lib = await Libudev.open(opts.libudevPath ?? 'libudev.so.1');
  let source: 'udev' | 'kernel';
  let reason: string;
  const wanted = opts.source ?? 'auto';
  if (wanted === 'auto') {
    source = udevdRunning() ? 'udev' : 'kernel';
    reason =
      source === 'udev'
        ? 'systemd-udevd is running: listening to udev events (sent after its rules ran)'
        : `systemd-udevd is not running (no ${UDEVD_CONTROL}), so its event source would stay silent: ` +
          'listening to the kernel uevents directly';
  } else {
    source = wanted;
    reason = `the ${wanted} event source was requested`;
  }

  let udev: External | undefined;
  let monitor: External | undefined;
  const release = () => {
    if (monitor) lib.ptr('udev_monitor_unref', [monitor]);
    if (udev) lib.ptr('udev_unref', [udev]);
    monitor = undefined;
    udev = undefined;
    lib.close();
  };
  try {
    udev = lib.ptr('udev_new');
    if (!udev) throw new Error('udev_new failed');
    monitor = lib.newMonitor(udev, source);
    if (!monitor) throw new Error(`udev_monitor_new_from_netlink(${source}) failed`);
    if (lib.filterBlock(monitor) < 0)
      throw new Error('udev_monitor_filter_add_match_subsystem_devtype failed');
    if (lib.int('udev_monitor_enable_receiving', monitor) < 0)
      throw new Error('udev_monitor_enable_receiving failed');
    if (lib.int('udev_monitor_get_fd', monitor) < 0) throw new Error('udev_monitor_get_fd failed');
  } catch (e) {
    release();
    throw new Error(`libudev monitor could not be set up (${message(e)})`);
  }

  const drain = () => {
    if (!monitor) return;
    for (let i = 0; i < MAX_EVENTS_PER_DRAIN; i++) {
      const { device, errno } = lib.receive(monitor);
      if (!device) {
        // EAGAIN: queue empty. ENOBUFS: the socket overflowed and events were lost; say so.
        if (errno !== EAGAIN && errno !== 0) {
          opts.onError?.(
            new RescueError(
              'E_HOTPLUG_EVENTS_LOST',
              `Disk hot-plug events may have been lost (udev monitor: errno ${errno})`,
              'Refresh the device list to see the current disks.',
              { errno },
            ),
          );
        }
        return;
      }
      let event: BlockEvent | undefined;
      try {
        const action = asAction(lib.str('udev_device_get_action', device));
        const devtype = asDevtype(lib.str('udev_device_get_devtype', device));
        const name = lib.str('udev_device_get_sysname', device);
        if (action && devtype && name) {
          const devnode = lib.str('udev_device_get_devnode', device) ?? devNodeOf(name);
          event = { action, name, devnode, devtype };
        }
      } finally {
        lib.ptr('udev_device_unref', [device]);
      }
      if (event) {
        try {
          onEvent(event);
        } catch (e) {
          opts.onError?.(e);
        }
      }
    }
  };
  const tick = () => {
    try {
      drain();
    } catch (e) {
      // A failing FFI call must not become an uncaught exception in a timer callback.
      opts.onError?.(e);
    }
  };
  const timer = setInterval(tick, opts.receiveIntervalMs ?? DEFAULT_RECEIVE_MS);
  const stop = () => {
    clearInterval(timer);
    release();
  };
  if (opts.signal.aborted) stop();
  else opts.signal.addEventListener('abort', stop, { once: true });
  return { source, reason };
}

/** One block device as poll mode sees it; a change in any of these is a 'change' event. */
export interface BlockSnapshotEntry {
  dev: string;
  size: number;
  readOnly: boolean;
  devtype: 'disk' | 'partition';
}

export type BlockSnapshot = ReadonlyMap<string, BlockSnapshotEntry>;

export async function snapshotBlockDevices(sysRoot = '/sys'): Promise<Map<string, BlockSnapshotEntry>> {
  const out = new Map<string, BlockSnapshotEntry>();
  for (const name of await readSysDir(`${sysRoot}/class/block`)) {
    const dir = `${sysRoot}/class/block/${name}`;
    const dev = await readSysString(`${dir}/dev`);
    if (dev === undefined) continue; // vanished between readdir and read
    out.set(name, {
      dev,
      size: (await readSysNumber(`${dir}/size`)) ?? 0,
      readOnly: (await readSysNumber(`${dir}/ro`)) === 1,
      devtype: (await readSysNumber(`${dir}/partition`)) !== undefined ? 'partition' : 'disk',
    });
  }
  return out;
}

/**
 * Events that turn `prev` into `next`, in the order udev would send them: removals of partitions
 * before their disks, additions of disks before their partitions, then changes.
 */
export function diffBlockSnapshots(prev: BlockSnapshot, next: BlockSnapshot): BlockEvent[] {
  const ev = (action: BlockEvent['action'], name: string, e: BlockSnapshotEntry): BlockEvent => ({
    action,
    name,
    devnode: devNodeOf(name),
    devtype: e.devtype,
  });
  const removed: BlockEvent[] = [];
  const added: BlockEvent[] = [];
  const changed: BlockEvent[] = [];
  for (const [name, e] of prev) if (!next.has(name)) removed.push(ev('remove', name, e));
  for (const [name, e] of next) {
    const old = prev.get(name);
    if (!old) added.push(ev('add', name, e));
    else if (
      old.dev !== e.dev ||
      old.size !== e.size ||
      old.readOnly !== e.readOnly ||
      old.devtype !== e.devtype
    ) {
      changed.push(ev('change', name, e));
    }
  }
  const byName = (a: BlockEvent, b: BlockEvent) => a.name.localeCompare(b.name, 'en', { numeric: true });
  const disksFirst = (a: BlockEvent, b: BlockEvent) =>
    a.devtype === b.devtype ? byName(a, b) : a.devtype === 'disk' ? -1 : 1;
  removed.sort((a, b) => -disksFirst(a, b));
  added.sort(disksFirst);
  changed.sort(disksFirst);
  return [...removed, ...added, ...changed];
}

async function startPoll(onEvent: (e: BlockEvent) => void, opts: WatchOptions): Promise<void> {
  const sysRoot = opts.sysRoot ?? '/sys';
  const interval = opts.pollIntervalMs ?? DEFAULT_POLL_MS;
  let prev = await snapshotBlockDevices(sysRoot);
  let timer: NodeJS.Timeout | undefined;
  // A chain of timeouts, not setInterval: a slow sysfs read must not start a second overlapping scan.
  const tick = async () => {
    try {
      const next = await snapshotBlockDevices(sysRoot);
      if (opts.signal.aborted) return;
      const events = diffBlockSnapshots(prev, next);
      prev = next;
      for (const e of events) {
        try {
          onEvent(e);
        } catch (err) {
          opts.onError?.(err);
        }
      }
    } catch (err) {
      opts.onError?.(err);
    }
    if (!opts.signal.aborted) timer = setTimeout(tick, interval);
  };
  if (opts.signal.aborted) return;
  timer = setTimeout(tick, interval);
  opts.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
}

/**
 * Reports disks and partitions that appear, disappear or change (media inserted, loop device
 * attached) until `signal` aborts. Devices present at the start are not reported: list them with
 * listBlockDevices first. Resolves once watching has started, saying how.
 */
export async function watchBlockDevices(
  onEvent: (e: BlockEvent) => void,
  opts: WatchOptions,
): Promise<WatchResult> {
  const mode = opts.mode ?? 'auto';
  if (mode === 'poll') {
    await startPoll(onEvent, opts);
    return { mode: 'poll', reason: 'polling was requested' };
  }
  try {
    const { source, reason } = await startUdev(onEvent, opts);
    return { mode: 'udev', source, reason };
  } catch (e) {
    if (mode === 'udev') {
      throw new RescueError(
        'E_HOTPLUG_UNAVAILABLE',
        `Cannot watch for disks through libudev: ${message(e)}`,
        'Install libudev1 (Debian) or let the watcher fall back to polling sysfs.',
      );
    }
    await startPoll(onEvent, opts);
    return {
      mode: 'poll',
      reason: `${message(e)}; polling /sys/class/block every ${opts.pollIntervalMs ?? DEFAULT_POLL_MS} ms instead`,
    };
  }
}
