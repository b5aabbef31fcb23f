import { promises as fsp } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlockDevice, listBlockDevices } from '../../rescue/engine/devices/discovery.ts';
import { classifyDmUuid, describeHolder, type Holder } from '../../rescue/engine/devices/holders.ts';
import { buildFakeProc, buildFakeSysfs, type FakeDisk } from '../fixtures/devices.ts';
import { makeTempDir } from '../fixtures/lab.ts';

/*
 * A machine as sysfs shows it: a SATA SSD with swap and LUKS → LVM (root, swap), an NVMe disk with
 * 4 KiB sectors holding an md RAID member and a btrfs partition, a USB stick, a virtio disk that
 * is a whole-disk LVM PV, an SD card, virtio-scsi, a loop device with a partition, an unattached
 * loop, zram and ram.
 */
const vpd80 = (serial: string) =>
  Buffer.concat([Buffer.from([0, 0x80, 0, serial.length]), Buffer.from(serial, 'ascii')]);

const DISKS: FakeDisk[] = [
  {
    name: 'sda',
    devicePath: 'devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda',
    dev: '8:0',
    size: 1000215216,
    rotational: 0,
    device: {
      link: '../../../0:0:0:0',
      attrs: { model: 'Samsung SSD 860 \n', vendor: 'ATA     \n', vpd_pg80: vpd80('  S3Z1NB0K123456A') },
    },
    attrs: { wwid: 't10.ATA     Samsung SSD 860 EVO 500GB                   S3Z1NB0K123456A\n' },
    partitions: [
      { name: 'sda1', number: 1, dev: '8:1', start: 2048, size: 1048576 },
      { name: 'sda2', number: 2, dev: '8:2', start: 1050624, size: 999163904, holders: ['dm-0'] },
    ],
  },
  {
    name: 'dm-0',
    devicePath: 'devices/virtual/block/dm-0',
    dev: '253:0',
    size: 999131136,
    attrs: {
      'dm/uuid': 'CRYPT-LUKS2-3f1c9b2e8a7d4c5f9e0b1a2c3d4e5f60-luks-3f1c9b2e',
      'dm/name': 'luks-3f1c9b2e',
    },
    holders: ['dm-1', 'dm-2'],
  },
  {
    name: 'dm-1',
    devicePath: 'devices/virtual/block/dm-1',
    dev: '253:1',
    size: 990000000,
    attrs: {
      'dm/uuid': 'LVM-abcdefABCDEF0123456789abcdefABCDEFghijklmnopqrstuvwxyz012345',
      'dm/name': 'vg-root',
    },
  },
  {
    name: 'dm-2',
    devicePath: 'devices/virtual/block/dm-2',
    dev: '253:2',
    size: 8388608,
    attrs: {
      'dm/uuid': 'LVM-abcdefABCDEF0123456789abcdefABCDEFswapswapswapswapswapswap01',
      'dm/name': 'vg-swap',
    },
  },
  {
    name: 'nvme0n1',
    devicePath: 'devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1',
    dev: '259:0',
    size: 1953525168,
    logical: 4096,
    physical: 4096,
    device: {
      link: '../../nvme0',
      attrs: { model: 'WDC PC SN730 SDBQNTY-1T00-1001          \n', serial: '  21037X800123  \n' },
    },
    attrs: { wwid: 'eui.e8238fa6bf530001001b448b4a0f1d23\n' },
    partitions: [
      { name: 'nvme0n1p1', number: 1, dev: '259:1', start: 2048, size: 1048576000, holders: ['md127'] },
      { name: 'nvme0n1p2', number: 2, dev: '259:2', start: 1048578048, size: 904945664 },
    ],
  },
  {
    name: 'md127',
    devicePath: 'devices/virtual/block/md127',
    dev: '9:127',
    size: 1048313856,
    attrs: { 'md/level': 'raid1\n', 'md/metadata_version': '1.2\n' },
  },
  {
    name: 'sdb',
    devicePath: 'devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb',
    dev: '8:16',
    size: 60063744,
    removable: 1,
    rotational: 1,
    device: { link: '../../../6:0:0:0', attrs: { model: 'Ultra Fit       \n', vendor: 'SanDisk \n' } },
    partitions: [{ name: 'sdb1', number: 1, dev: '8:17', start: 32, size: 60063712 }],
  },
  {
    name: 'vda',
    devicePath: 'devices/pci0000:00/0000:00:02.0/virtio1/block/vda',
    dev: '254:0',
    size: 67108864,
    physical: 4096,
    rotational: 1,
    device: { link: '../../../virtio1', attrs: { vendor: '0x1af4\n' } },
    attrs: { serial: 'overlayblk' },
    holders: ['dm-3'],
  },
  {
    name: 'dm-3',
    devicePath: 'devices/virtual/block/dm-3',
    dev: '253:3',
    size: 67100000,
    attrs: { 'dm/uuid': 'LVM-data0123456789data0123456789data0123456789data012345678', 'dm/name': 'vg-data' },
  },
  {
    name: 'mmcblk0',
    devicePath: 'devices/platform/fe320000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0',
    dev: '179:0',
    size: 62333952,
    device: { link: '../../../mmc0:0001', attrs: { name: 'SC32G\n', serial: '0x1234abcd\n' } },
    partitions: [{ name: 'mmcblk0p1', number: 1, dev: '179:1', start: 8192, size: 62325760 }],
  },
  {
    name: 'sdc',
    devicePath: 'devices/pci0000:00/0000:00:03.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc',
    dev: '8:32',
    size: 20971520,
    device: { link: '../../../2:0:0:0', attrs: { model: 'QEMU HARDDISK   \n', vendor: 'QEMU    \n' } },
  },
  {
    name: 'loop0',
    devicePath: 'devices/virtual/block/loop0',
    dev: '7:0',
    size: 204800,
    attrs: { 'loop/backing_file': '/srv/images/disk one.img\n', 'loop/offset': '0\n' },
    partitions: [{ name: 'loop0p1', number: 1, dev: '259:3', start: 2048, size: 200704 }],
  },
  { name: 'loop1', devicePath: 'devices/virtual/block/loop1', dev: '7:1', size: 0 },
  { name: 'zram0', devicePath: 'devices/virtual/block/zram0', dev: '252:0', size: 8388608, logical: 4096 },
  { name: 'ram0', devicePath: 'devices/virtual/block/ram0', dev: '1:0', size: 131072 },
];

const MOUNTINFO = String.raw`22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 9:127 / /srv/my\040data rw,noatime shared:2 - ext4 /dev/md127 rw
25 22 8:17 / /media/usb ro,nosuid,nodev,relatime shared:3 - vfat /dev/sdb1 ro,fmask=0022
26 22 0:45 /@data /data rw,relatime shared:4 - btrfs /dev/nvme0n1p2 rw,space_cache=v2,subvolid=256,subvol=/@data
27 22 8:17 / /mnt/again rw,relatime shared:5 - vfat /dev/sdb1 ro,fmask=0022
`;

const SWAPS = String.raw`Filename				Type		Size		Used		Priority
/dev/sda1                               partition	524284		0		-2
/dev/dm-2                               partition	4194300		0		-3
/swap\040file                           file		1024		0		-4
`;

describe('listBlockDevices on a fake sysfs tree', () => {
  let root = '';
  let disks: BlockDevice[] = [];
  let all: BlockDevice[] = [];
  const disk = (name: string) => {
    const d = disks.find((x) => x.name === name);
    if (!d) throw new Error(`${name} not listed`);
    return d;
  };

  beforeAll(async () => {
    root = await makeTempDir('rescue-fakesys-');
    const sysRoot = await buildFakeSysfs(root, DISKS);
    const procRoot = await buildFakeProc(root, MOUNTINFO, SWAPS);
    // No stat(): every /dev path has to be resolved through sysfs names, as in a tree without /dev.
    const devNumberOf = async () => undefined;
    disks = await listBlockDevices({ sysRoot, procRoot, devNumberOf });
    all = await listBlockDevices({ sysRoot, procRoot, devNumberOf, includeAll: true });
  });
  afterAll(async () => {
    await fsp.rm(root, { recursive: true, force: true });
  });

  it('lists the disks in kernel-name order, without ram, zram and unattached loops by default', () => {
    expect(disks.map((d) => d.name)).toEqual([
      'dm-0',
      'dm-1',
      'dm-2',
      'dm-3',
      'loop0',
      'md127',
      'mmcblk0',
      'nvme0n1',
      'sda',
      'sdb',
      'sdc',
      'vda',
    ]);
    expect(all.map((d) => d.name)).toEqual(expect.arrayContaining(['loop1', 'zram0', 'ram0']));
    expect(all).toHaveLength(disks.length + 3);
  });

  it('derives the transport from where /sys/block/NAME points', () => {
    const t = Object.fromEntries(all.map((d) => [d.name, d.transport]));
    expect(t).toEqual({
      'dm-0': 'dm',
      'dm-1': 'dm',
      'dm-2': 'dm',
      'dm-3': 'dm',
      loop0: 'loop',
      loop1: 'loop',
      md127: 'md',
      mmcblk0: 'mmc',
      nvme0n1: 'nvme',
      ram0: 'unknown',
      sda: 'sata',
      sdb: 'usb',
      sdc: 'scsi',
      vda: 'virtio',
      zram0: 'unknown',
    });
  });

  it('reads sizes in 512-byte units whatever the sector size, and the queue attributes', () => {
    const nvme = disk('nvme0n1');
    expect(nvme).toMatchObject({
      path: '/dev/nvme0n1',
      major: 259,
      minor: 0,
      size: 1953525168 * 512,
      logicalSectorSize: 4096,
      physicalSectorSize: 4096,
      rotational: false,
      removable: false,
      readOnly: false,
    });
    expect(nvme.partitions.map((p) => [p.name, p.number, p.start, p.size, p.path])).toEqual([
      ['nvme0n1p1', 1, 2048 * 512, 1048576000 * 512, '/dev/nvme0n1p1'],
      ['nvme0n1p2', 2, 1048578048 * 512, 904945664 * 512, '/dev/nvme0n1p2'],
    ]);
    expect(disk('vda')).toMatchObject({ logicalSectorSize: 512, physicalSectorSize: 4096, rotational: true });
    expect(disk('sdb')).toMatchObject({ removable: true, size: 60063744 * 512 });
  });

  it('finds model, vendor and serial where each bus keeps them', () => {
    expect(disk('sda')).toMatchObject({ model: 'Samsung SSD 860', vendor: 'ATA', serial: 'S3Z1NB0K123456A' });
    expect(disk('sda').wwid).toMatch(/^t10\.ATA/);
    expect(disk('nvme0n1')).toMatchObject({
      model: 'WDC PC SN730 SDBQNTY-1T00-1001',
      vendor: undefined,
      serial: '21037X800123',
      wwid: 'eui.e8238fa6bf530001001b448b4a0f1d23',
    });
    expect(disk('vda')).toMatchObject({ model: undefined, vendor: '0x1af4', serial: 'overlayblk' });
    expect(disk('mmcblk0')).toMatchObject({ model: 'SC32G', serial: '0x1234abcd' });
    expect(disk('sdc')).toMatchObject({ model: 'QEMU HARDDISK', vendor: 'QEMU', serial: undefined });
    expect(disk('loop0')).toMatchObject({ backingFile: '/srv/images/disk one.img', serial: undefined });
  });

  it('takes a USB stick’s serial from the USB device above the SCSI disk', async () => {
    const usbDir = `${root}/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1`;
    await fsp.writeFile(`${usbDir}/idVendor`, '0781\n');
    await fsp.writeFile(`${usbDir}/serial`, '4C530001230718117384\n');
    const again = await listBlockDevices({
      sysRoot: `${root}/sys`,
      procRoot: `${root}/proc`,
      devNumberOf: async () => undefined,
    });
    expect(again.find((d) => d.name === 'sdb')?.serial).toBe('4C530001230718117384');
  });

  it('matches mounts by major:minor, btrfs by its source, and swap by device', () => {
    const sdb1 = disk('sdb').partitions[0];
    expect(sdb1.mounts).toEqual([
      {
        mountPoint: '/media/usb',
        fsType: 'vfat',
        source: '/dev/sdb1',
        readOnly: true,
        options: ['ro', 'nosuid', 'nodev', 'relatime'],
      },
      {
        mountPoint: '/mnt/again',
        fsType: 'vfat',
        source: '/dev/sdb1',
        readOnly: true,
        options: ['rw', 'relatime'],
      },
    ]);
    expect(sdb1.inUseReasons).toEqual(['mounted at /media/usb', 'mounted at /mnt/again']);
    expect(disk('md127').inUseReasons).toEqual(['mounted at /srv/my data']);
    const p2 = disk('nvme0n1').partitions[1];
    expect(p2.mounts.map((m) => [m.mountPoint, m.fsType])).toEqual([['/data', 'btrfs']]);
    const sda1 = disk('sda').partitions[0];
    expect(sda1).toMatchObject({ swap: true, inUse: true, inUseReasons: ['active swap'] });
    expect(disk('dm-2')).toMatchObject({ swap: true, inUseReasons: ['active swap'] });
  });

  it('classifies holders and says in words what stacks on a partition', () => {
    const sda2 = disk('sda').partitions[1];
    expect(sda2.holders).toHaveLength(1);
    const luks = sda2.holders[0];
    expect(luks).toMatchObject({
      name: 'dm-0',
      path: '/dev/dm-0',
      kind: 'dm-crypt',
      holds: 'sda2',
      mapName: 'luks-3f1c9b2e',
    });
    expect(luks.inUseReasons).toEqual([
      'held by LVM volume vg-root, which is mounted at /',
      'held by LVM volume vg-swap, which is active swap',
    ]);
    expect(sda2.inUseReasons).toEqual([
      'held by dm-crypt mapping luks-3f1c9b2e, which is held by LVM volume vg-root, which is mounted at /; ' +
        'held by LVM volume vg-swap, which is active swap',
    ]);
    const member = disk('nvme0n1').partitions[0];
    expect(member.holders.map((h) => [h.name, h.kind, h.detail])).toEqual([['md127', 'md', 'raid1']]);
    expect(member.inUseReasons).toEqual(['held by md127 (RAID1), which is mounted at /srv/my data']);
    // A whole-disk PV: the disk itself is held, nothing is mounted on the volume.
    expect(disk('vda')).toMatchObject({ inUse: true, inUseReasons: ['held by LVM volume vg-data'] });
  });

  it('marks a disk in use when any partition is, naming the partition', () => {
    expect(disk('sda').inUse).toBe(true);
    expect(disk('sda').inUseReasons[0]).toBe('sda1 active swap');
    expect(disk('sda').holders).toEqual([]);
    expect(disk('sdb').inUseReasons).toEqual(['sdb1 mounted at /media/usb', 'sdb1 mounted at /mnt/again']);
    expect(disk('nvme0n1').inUseReasons).toHaveLength(2);
    for (const free of ['mmcblk0', 'sdc', 'loop0', 'dm-1']) {
      const d = disk(free);
      if (free === 'dm-1') {
        expect(d.inUseReasons).toEqual(['mounted at /']);
        continue;
      }
      expect(d.inUse, free).toBe(false);
      expect(d.inUseReasons, free).toEqual([]);
      for (const p of d.partitions) expect(p.inUse, p.name).toBe(false);
    }
  });
});

describe('holder wording', () => {
  const h = (over: Partial<Holder>): Holder => ({
    name: 'dm-4',
    path: '/dev/dm-4',
    kind: 'dm',
    holds: 'sdz1',
    mapName: undefined,
    detail: undefined,
    inUseReasons: [],
    ...over,
  });

  it('classifies device-mapper uuids by owner prefix', () => {
    expect(classifyDmUuid('CRYPT-LUKS2-abc-name')).toBe('dm-crypt');
    expect(classifyDmUuid('CRYPT-PLAIN-name')).toBe('dm-crypt');
    expect(classifyDmUuid('LVM-xyz')).toBe('lvm');
    expect(classifyDmUuid('mpath-3600508b4000156d700012000000b0000')).toBe('dm');
    expect(classifyDmUuid('')).toBe('dm');
    expect(classifyDmUuid(undefined)).toBe('dm');
  });

  it('names the thing a person knows', () => {
    expect(describeHolder(h({ kind: 'md', name: 'md127' }))).toBe('held by md127 (RAID)');
    expect(describeHolder(h({ kind: 'md', name: 'md0', detail: 'raid10' }))).toBe('held by md0 (RAID10)');
    expect(describeHolder(h({ kind: 'lvm', mapName: 'vg-root' }))).toBe('held by LVM volume vg-root');
    expect(describeHolder(h({ kind: 'dm', mapName: 'mpatha' }))).toBe('held by device-mapper mpatha (dm-4)');
    expect(describeHolder(h({ kind: 'other', name: 'bcache0' }))).toBe('held by bcache0');
  });
});
