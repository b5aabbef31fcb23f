import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertNotInUse,
  type BlockDevice,
  deviceUsage,
  holdersOf,
  isInUse,
  listBlockDevices,
} from '../../rescue/engine/devices/discovery.ts';
import { parseProcSwaps } from '../../rescue/engine/devices/mountinfo.ts';
import { LoopLab, partitionedImage } from '../fixtures/devices.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';

/*
 * Real loop devices on this machine, checked against lsblk, losetup, swapon and findmnt (util-linux
 * reads the same kernel files through its own code). Other people attach loop devices at the same
 * time: everything here is filtered to the devices this file attached.
 */

type LsblkNode = {
  name: string;
  size: number;
  start: number | null;
  'maj:min': string;
  ro: boolean;
  rm: boolean;
  'log-sec': number;
  'phy-sec': number;
  type: string;
  mountpoints: Array<string | null>;
  children?: LsblkNode[];
};

async function lsblk(dev: string): Promise<LsblkNode> {
  const out = await run('lsblk', [
    '-b',
    '-J',
    '-o',
    'NAME,SIZE,START,MAJ:MIN,RO,RM,LOG-SEC,PHY-SEC,TYPE,MOUNTPOINTS',
    dev,
  ]);
  return (JSON.parse(out.stdout) as { blockdevices: LsblkNode[] }).blockdevices[0];
}

function find(list: BlockDevice[], name: string): BlockDevice {
  const d = list.find((x) => x.name === name);
  if (!d) throw new Error(`${name} not listed (have ${list.map((x) => x.name).join(' ')})`);
  return d;
}

describe('listBlockDevices on real loop devices', () => {
  const lab = new LoopLab();
  let dir = '';
  let image = '';
  let dev = '';
  let name = '';
  // A tab and a space in the mount point: the kernel escapes both in mountinfo.
  let mnt = '';

  beforeAll(async () => {
    dir = await makeTempDir('rescue-devices-');
    image = await partitionedImage(join(dir, 'disk.img'), 96, [32, 24, 16]);
    dev = await lab.attach(image, 3);
    name = basename(dev);
    mnt = join(dir, 'mnt point\twith tab');
  });

  afterAll(async () => {
    try {
      await lab.cleanup();
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('shows the loop disk with its partitions, backing file and sizes equal to lsblk and losetup', async () => {
    const disks = await listBlockDevices();
    const disk = find(disks, name);
    const ref = await lsblk(dev);
    expect(disk.path).toBe(dev);
    expect(disk.transport).toBe('loop');
    expect(disk.size).toBe(ref.size);
    expect(disk.size).toBe(96 * 1024 * 1024);
    expect(`${disk.major}:${disk.minor}`).toBe(ref['maj:min']);
    expect(disk.readOnly).toBe(ref.ro);
    expect(disk.removable).toBe(ref.rm);
    expect(disk.logicalSectorSize).toBe(ref['log-sec']);
    expect(disk.physicalSectorSize).toBe(ref['phy-sec']);
    const losetup = JSON.parse((await run('losetup', ['-J', '-l', dev])).stdout) as {
      loopdevices: Array<{ name: string; 'back-file': string }>;
    };
    expect(disk.backingFile).toBe(losetup.loopdevices[0]['back-file']);
    expect(disk.backingFile).toBe(await fsp.realpath(image));

    const kids = ref.children ?? [];
    expect(disk.partitions.map((p) => p.name)).toEqual(kids.map((k) => k.name));
    expect(disk.partitions.map((p) => p.number)).toEqual([1, 2, 3]);
    for (const [i, p] of disk.partitions.entries()) {
      const k = kids[i];
      expect(p.size, p.name).toBe(k.size);
      expect(p.start, p.name).toBe((k.start ?? -1) * 512);
      expect(`${p.major}:${p.minor}`, p.name).toBe(k['maj:min']);
      expect(p.path).toBe(`/dev/${k.name}`);
    }
    // And against the partition table itself.
    const table = JSON.parse((await run('sfdisk', ['-J', image])).stdout) as {
      partitiontable: { partitions: Array<{ start: number; size: number }> };
    };
    expect(disk.partitions.map((p) => [p.start, p.size])).toEqual(
      table.partitiontable.partitions.map((p) => [p.start * 512, p.size * 512]),
    );
    expect(disk.inUse).toBe(false);
    expect(await isInUse(dev)).toBe(false);
    expect(await isInUse(image)).toBe(true); // attached as a loop device
    expect((await deviceUsage(image)).inUseReasons).toEqual([`attached as loop device ${dev}`]);
  });

  it('sees a mounted ext4 partition, with the escaped mount point, as lsblk does', async () => {
    const p1 = `${dev}p1`;
    await run('mkfs.ext4', ['-q', '-F', p1]);
    await lab.mount(p1, mnt);
    try {
      const disk = find(await listBlockDevices(), name);
      const part = disk.partitions[0];
      expect(part.mounts).toEqual([
        expect.objectContaining({ mountPoint: mnt, fsType: 'ext4', source: p1, readOnly: false }),
      ]);
      expect(part.mounts[0].options).toContain('rw');
      expect(part.inUseReasons).toEqual([`mounted at ${mnt}`]);
      expect(disk.inUse).toBe(true);
      expect(disk.inUseReasons).toEqual([`${name}p1 mounted at ${mnt}`]);
      const ref = await lsblk(dev);
      expect(ref.children?.[0].mountpoints).toEqual([mnt]);

      const u = await deviceUsage(p1);
      expect(u).toMatchObject({ kind: 'partition', inUse: true, inUseReasons: [`mounted at ${mnt}`] });
      expect(u.disk?.name).toBe(name);
      expect(await isInUse(dev)).toBe(true);
      expect(await isInUse(`${dev}p2`)).toBe(false);
      await expect(assertNotInUse(p1)).rejects.toMatchObject({ code: 'E_DEVICE_IN_USE' });
      await expect(assertNotInUse(`${dev}p2`)).resolves.toMatchObject({ inUse: false });
      expect(await holdersOf(dev)).toEqual([]);
      // The image is in use through its loop device, and the wording says why.
      expect((await deviceUsage(image)).inUseReasons).toEqual([
        `attached as loop device ${dev}, which is ${name}p1 mounted at ${mnt}`,
      ]);
    } finally {
      await lab.umount(mnt);
    }
    expect(await isInUse(p1)).toBe(false);
  });

  it('sees a read-only mount as read-only', async () => {
    const p1 = `${dev}p1`;
    await lab.mount(p1, mnt, ['-o', 'ro']);
    try {
      const part = find(await listBlockDevices(), name).partitions[0];
      expect(part.mounts.map((m) => [m.mountPoint, m.readOnly])).toEqual([[mnt, true]]);
      expect(part.inUse).toBe(true);
    } finally {
      await lab.umount(mnt);
    }
  });

  it('sees an active swap partition, as /proc/swaps and swapon do', async () => {
    const p2 = `${dev}p2`;
    await lab.swapon(p2);
    try {
      const swaps = parseProcSwaps(await fsp.readFile('/proc/swaps', 'utf8'));
      const ours = swaps.find((s) => s.path === p2);
      expect(ours).toBeDefined();
      const show = await run('swapon', [
        '--show=NAME,TYPE,SIZE,USED,PRIO',
        '--bytes',
        '--raw',
        '--noheadings',
      ]);
      const line = show.stdout
        .split('\n')
        .map((l) => l.split(' '))
        .find((f) => f[0] === p2);
      expect(line).toEqual([p2, 'partition', String(ours!.size), String(ours!.used), String(ours!.priority)]);

      const disk = find(await listBlockDevices(), name);
      const part = disk.partitions[1];
      expect(part).toMatchObject({ swap: true, inUse: true, inUseReasons: ['active swap'], mounts: [] });
      expect(disk.inUseReasons).toEqual([`${name}p2 active swap`]);
      expect((await lsblk(dev)).children?.[1].mountpoints).toEqual(['[SWAP]']);
      expect(await isInUse(p2)).toBe(true);
      expect(await isInUse(`${dev}p3`)).toBe(false);
    } finally {
      await lab.swapoff(p2);
    }
    expect(await isInUse(p2)).toBe(false);
  });

  it('lets the kernel veto through an exclusive open when our tables see nothing', async () => {
    // Hold the partition exclusively from another process, as a filesystem in another mount
    // namespace would: the mount table shows nothing, the O_EXCL open fails with EBUSY.
    const p3 = `${dev}p3`;
    const holder = await import('node:child_process').then((cp) =>
      cp.spawn(process.execPath, [
        '-e',
        `const fs=require('fs');fs.openSync(${JSON.stringify(p3)},fs.constants.O_RDONLY|fs.constants.O_EXCL);` +
          "process.stdout.write('held\\n');setTimeout(()=>{},60000)",
      ]),
    );
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`holder exited with ${code}`)));
      });
      const u = await deviceUsage(p3);
      expect(u.mounts).toEqual([]);
      expect(u.inUse).toBe(true);
      expect(u.inUseReasons[0]).toMatch(/^busy: the kernel refuses exclusive access/);
      expect(await isInUse(p3, { exclusiveCheck: false })).toBe(false);
    } finally {
      holder.kill();
    }
  });

  it('reports unknown paths as E_DEVICE_NOT_FOUND', async () => {
    await expect(deviceUsage(join(dir, 'nope'))).rejects.toMatchObject({ code: 'E_DEVICE_NOT_FOUND' });
    await expect(deviceUsage('/dev/null')).rejects.toMatchObject({ code: 'E_DEVICE_NOT_FOUND' });
  });
});

describe("listBlockDevices against lsblk on this machine's disks", () => {
  it('agrees field by field', async () => {
    const out = await run('lsblk', [
      '-b',
      '-J',
      '-d',
      '-o',
      'NAME,SIZE,MODEL,SERIAL,ROTA,RM,TRAN,RO,LOG-SEC,PHY-SEC,VENDOR,MAJ:MIN',
    ]);
    type Row = {
      name: string;
      size: number;
      model: string | null;
      serial: string | null;
      rota: boolean;
      rm: boolean;
      tran: string | null;
      ro: boolean;
      'log-sec': number;
      'phy-sec': number;
      vendor: string | null;
      'maj:min': string;
    };
    // Loop devices come and go with other people's tests; they are compared above on our own.
    const rows = (JSON.parse(out.stdout) as { blockdevices: Row[] }).blockdevices.filter(
      (r) => !/^loop/.test(r.name),
    );
    const all = await listBlockDevices({ includeAll: true });
    const shown = new Set((await listBlockDevices()).map((d) => d.name));
    expect(rows.length).toBeGreaterThan(0);
    // lsblk's transport names → ours; lsblk (2.38) has none for virtio, loop, dm, md.
    const tran: Record<string, string> = {
      sata: 'sata',
      ata: 'sata',
      usb: 'usb',
      nvme: 'nvme',
      mmc: 'mmc',
      virtio: 'virtio',
    };
    for (const r of rows) {
      const d = find(all, r.name);
      expect(d.size, r.name).toBe(r.size);
      expect(`${d.major}:${d.minor}`).toBe(r['maj:min']);
      expect(d.rotational, r.name).toBe(r.rota);
      expect(d.removable, r.name).toBe(r.rm);
      expect(d.readOnly, r.name).toBe(r.ro);
      expect(d.logicalSectorSize, r.name).toBe(r['log-sec']);
      expect(d.physicalSectorSize, r.name).toBe(r['phy-sec']);
      expect(d.model ?? null, r.name).toBe(r.model?.trim() || null);
      expect(d.vendor ?? null, r.name).toBe(r.vendor?.trim() || null);
      if (r.tran === null) expect(['virtio', 'loop', 'dm', 'md', 'unknown']).toContain(d.transport);
      else expect(d.transport, r.name).toBe(tran[r.tran] ?? 'scsi');
      if (r.serial !== null) {
        expect(d.serial, r.name).toBe(r.serial.trim());
      } else if (d.serial !== undefined) {
        // lsblk without udev reads no serial for virtio-blk; the kernel has it in /sys/block/X/serial.
        expect(d.transport, r.name).toBe('virtio');
        expect(d.serial).toBe((await fsp.readFile(`/sys/block/${r.name}/serial`, 'utf8')).trim());
      }
      // Hidden by default: memory disks only.
      if (!shown.has(r.name)) expect(r.name, 'hidden by default').toMatch(/^(?:z?ram)\d+$/);
    }
  });
});
