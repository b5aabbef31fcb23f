import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMountinfo, parseProcSwaps, unescapeProcField } from '../../rescue/engine/devices/mountinfo.ts';
import {
  parseDevNumber,
  parseVpdSerial,
  splitDevNumber,
  transportFromSysPath,
} from '../../rescue/engine/devices/sysfs.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';

// Captured from real machines: this test VM (virtio root, cgroup v1+v2), a Debian desktop with an
// LVM root, a USB stick whose label has a space, a btrfs subvolume, and proc(5)'s own example.
const CAPTURED_MOUNTINFO = String.raw`22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
29 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro
30 29 8:1 / /boot rw,relatime shared:60 - ext2 /dev/sda1 rw
612 29 8:33 / /media/anna/My\040USB\040Stick rw,nosuid,nodev,relatime shared:330 - vfat /dev/sdc1 rw,fmask=0022,dmask=0022,codepage=437,iocharset=ascii,shortname=mixed,showexec,utf8,flush,errors=remount-ro uhelper=udisks2
88 29 0:45 /@home /home rw,relatime shared:45 - btrfs /dev/nvme0n1p3 rw,ssd,discard=async,space_cache=v2,subvolid=257,subvol=/@home
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
700 29 7:3 / /srv/tab\011new\012line\134back ro,relatime shared:400 propagate_from:2 - ext4 /dev/loop3 ro
`;

const CAPTURED_SWAPS = String.raw`Filename				Type		Size		Used		Priority
/dev/loop0p2                            partition	16380		0		-2
/dev/dm-1                               partition	8388604		1024		-3
/var/swap\040file                       file		1048572		0		-4
/old/swapfile\040(deleted)              file		4092		0		-5
`;

describe('parseMountinfo', () => {
  const entries = parseMountinfo(CAPTURED_MOUNTINFO);
  const byId = (id: number) => entries.find((e) => e.mountId === id)!;

  it('reads every line and every field', () => {
    expect(entries).toHaveLength(10);
    expect(byId(27)).toEqual({
      mountId: 27,
      parentId: 1,
      major: 254,
      minor: 0,
      root: '/',
      mountPoint: '/',
      options: ['rw', 'relatime'],
      optionalFields: [],
      fsType: 'ext4',
      source: '/dev/vda',
      superOptions: ['rw', 'discard', 'resv_strict', 'resuid=65534', 'resgid=65534'],
      readOnly: false,
    });
  });

  it('undoes the octal escapes in mount points', () => {
    expect(byId(612)).toMatchObject({
      mountPoint: '/media/anna/My USB Stick',
      major: 8,
      minor: 33,
      fsType: 'vfat',
    });
    expect(byId(700).mountPoint).toBe('/srv/tab\tnew\nline\\back');
  });

  it('keeps optional fields apart from the fs type and marks read-only mounts', () => {
    expect(byId(700)).toMatchObject({ optionalFields: ['shared:400', 'propagate_from:2'], fsType: 'ext4' });
    expect(byId(700).readOnly).toBe(true);
    expect(byId(28).readOnly).toBe(true);
    expect(byId(27).readOnly).toBe(false);
    expect(byId(36)).toMatchObject({ root: '/mnt1', mountPoint: '/mnt2', optionalFields: ['master:1'] });
  });

  it('reports btrfs with its anonymous 0:N device and its real source', () => {
    expect(byId(88)).toMatchObject({
      major: 0,
      minor: 45,
      root: '/@home',
      source: '/dev/nvme0n1p3',
      fsType: 'btrfs',
    });
  });

  it('skips lines that do not have the documented shape', () => {
    expect(parseMountinfo('garbage\n1 2 3\n27 1 x:y / / rw - ext4 /dev/vda rw\n')).toEqual([]);
  });

  it('never throws on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (s) => {
        parseMountinfo(s);
        parseProcSwaps(s);
      }),
    );
  });

  it('round-trips any path through the kernel escaping (mangle " \\t\\n\\\\" as octal)', () => {
    const kernelEscape = (s: string) =>
      s.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
    fc.assert(
      fc.property(
        fc.string({
          unit: fc.constantFrom('a', 'Z', '/', ' ', '\t', '\n', '\\', '0', '4', 'é', '-'),
          minLength: 1,
        }),
        fc.string({ unit: fc.constantFrom('a', '/', ' ', '\\', '1'), minLength: 1 }),
        (mp, src) => {
          const line = `1 2 8:1 / ${kernelEscape(mp)} rw - ext4 ${kernelEscape(src)} rw`;
          const [e] = parseMountinfo(line);
          expect(e.mountPoint).toBe(mp);
          expect(e.source).toBe(src);
          expect(unescapeProcField(kernelEscape(mp))).toBe(mp);
        },
      ),
    );
  });
});

describe('parseMountinfo against findmnt (libmount) on the live mount table', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await makeTempDir('rescue-mountinfo-');
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('agrees field by field on the same snapshot of /proc/self/mountinfo', async () => {
    // One snapshot fed to both parsers: other tests mount and unmount meanwhile.
    const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
    const file = join(dir, 'mountinfo');
    await fsp.writeFile(file, text);
    const out = await run('findmnt', [
      '--tab-file',
      file,
      '-J',
      '--list',
      '-o',
      'ID,PARENT,MAJ:MIN,FSROOT,TARGET,FSTYPE,SOURCE,VFS-OPTIONS',
    ]);
    type Row = {
      id: number;
      parent: number;
      'maj:min': string;
      fsroot: string;
      target: string;
      fstype: string;
      source: string;
      'vfs-options': string;
    };
    const rows = (JSON.parse(out.stdout) as { filesystems: Row[] }).filesystems;
    const ours = parseMountinfo(text);
    expect(ours.length).toBe(rows.length);
    expect(ours.length).toBeGreaterThan(3);
    const byId = new Map(ours.map((e) => [e.mountId, e]));
    for (const r of rows) {
      const e = byId.get(Number(r.id));
      expect(e, `mount ${r.id}`).toBeDefined();
      expect(`${e!.major}:${e!.minor}`).toBe(r['maj:min']);
      expect(e!.parentId).toBe(Number(r.parent));
      expect(e!.mountPoint).toBe(r.target);
      expect(e!.fsType).toBe(r.fstype);
      expect(e!.root).toBe(r.fsroot);
      // findmnt appends [fsroot] to the source of bind mounts of a subtree.
      expect(r.source.startsWith(e!.source)).toBe(true);
      expect(e!.options.join(',')).toBe(r['vfs-options']);
    }
  });
});

describe('parseProcSwaps', () => {
  it('reads devices, files, sizes in bytes and negative priorities', () => {
    expect(parseProcSwaps(CAPTURED_SWAPS)).toEqual([
      { path: '/dev/loop0p2', type: 'partition', size: 16380 * 1024, used: 0, priority: -2 },
      { path: '/dev/dm-1', type: 'partition', size: 8388604 * 1024, used: 1024 * 1024, priority: -3 },
      { path: '/var/swap file', type: 'file', size: 1048572 * 1024, used: 0, priority: -4 },
      { path: '/old/swapfile (deleted)', type: 'file', size: 4092 * 1024, used: 0, priority: -5 },
    ]);
  });

  it('reads an empty table (header only)', () => {
    expect(parseProcSwaps('Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n')).toEqual([]);
  });
});

describe('sysfs rules', () => {
  it('derives the transport from real sysfs device paths', () => {
    const cases: Array<[string, string, string]> = [
      [
        'sdb',
        '/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb',
        'usb',
      ],
      ['nvme0n1', '/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1', 'nvme'],
      ['nvme0n1', '/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1', 'nvme'],
      ['sda', '/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda', 'sata'],
      ['vda', '/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda', 'virtio'],
      ['sdc', '/sys/devices/pci0000:00/0000:00:03.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc', 'scsi'],
      [
        'sdd',
        '/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sdd',
        'scsi',
      ],
      ['mmcblk0', '/sys/devices/platform/fe320000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0', 'mmc'],
      ['loop0', '/sys/devices/virtual/block/loop0', 'loop'],
      ['dm-0', '/sys/devices/virtual/block/dm-0', 'dm'],
      ['md127', '/sys/devices/virtual/block/md127', 'md'],
      ['nbd0', '/sys/devices/virtual/block/nbd0', 'unknown'],
    ];
    for (const [name, path, want] of cases) expect(transportFromSysPath(name, path), path).toBe(want);
  });

  it('reads the unit serial number out of VPD page 0x80', () => {
    const serial = '  S3Z1NB0K123456A    ';
    const page = Buffer.concat([Buffer.from([0, 0x80, 0, serial.length]), Buffer.from(serial, 'ascii')]);
    expect(parseVpdSerial(page)).toBe('S3Z1NB0K123456A');
    expect(parseVpdSerial(Buffer.from([0, 0x83, 0, 4, 65, 66, 67, 68]))).toBeUndefined();
    expect(parseVpdSerial(Buffer.from([0, 0x80, 0, 200, 65]))).toBe('A'); // claims more than it has
    expect(parseVpdSerial(Buffer.from([0, 0x80]))).toBeUndefined();
  });

  it('splits device numbers like glibc and parses sysfs dev files', () => {
    // makedev(259, 65537) = ((minor & 0xff) | (major & 0xfff) << 8 | (minor & ~0xff) << 12 | (major & ~0xfff) << 32)
    const major = 259;
    const minor = 65537;
    const rdev = Number(
      (BigInt(minor) & 0xffn) |
        ((BigInt(major) & 0xfffn) << 8n) |
        ((BigInt(minor) & ~0xffn) << 12n) |
        ((BigInt(major) & ~0xfffn) << 32n),
    );
    expect(splitDevNumber(rdev)).toEqual({ major, minor });
    expect(parseDevNumber('8:17\n')).toEqual({ major: 8, minor: 17 });
    expect(parseDevNumber('8:x')).toBeUndefined();
  });
});
