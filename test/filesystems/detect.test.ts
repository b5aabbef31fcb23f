import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource, FileSource } from '../../rescue/engine/devices/source.ts';
import { detectFilesystem, usedMapOf } from '../../rescue/engine/filesystems/detect.ts';
import { blkidExport, makeTempDir, run, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('rescue-detect-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function detectFile(path: string) {
  const src = await FileSource.open(path);
  try {
    return { id: await detectFilesystem(src), map: await usedMapOf(src) };
  } finally {
    await src.close();
  }
}

async function expectLikeBlkid(path: string, probePath = path) {
  const b = await blkidExport(probePath);
  const { id, map } = await detectFile(path);
  expect(id.type).toBe(b.TYPE);
  expect(id.uuid).toBe(b.UUID);
  expect(id.label).toBe(b.LABEL);
  return { id, map };
}

describe('detection of containers and special volumes, against blkid', () => {
  it('swap: only the signature page is kept, label and UUID as blkid', async () => {
    const img = await sparseFile(join(dir, 'swap.img'), 32 * MiB);
    await run('mkswap', ['-L', 'myswap', img]);
    const { map } = await expectLikeBlkid(img);
    expect(map.method).toBe('allocation');
    expect(map.usedBytes).toBe(4096);
  });

  it('swap holding a hibernation image is copied whole', async () => {
    const img = await sparseFile(join(dir, 'hib.img'), 8 * MiB);
    await run('mkswap', [img]);
    const h = await fsp.open(img, 'r+');
    await h.write(Buffer.from('S1SUSPEND\0'), 0, 10, 4096 - 10);
    await h.close();
    const { id, map } = await expectLikeBlkid(img);
    expect(id.type).toBe('swsuspend');
    expect(id.state?.hibernationImage).toBe(true);
    expect(map.method).toBe('sector-by-sector');
    expect(map.usedBytes).toBe(8 * MiB);
  });

  for (const version of ['luks1', 'luks2'] as const) {
    it(`${version}: identity as blkid, copied sector by sector with the reason`, async () => {
      const img = await sparseFile(join(dir, `${version}.img`), 24 * MiB);
      const args = [
        'luksFormat',
        '-q',
        '--type',
        version,
        '--pbkdf',
        'pbkdf2',
        '--pbkdf-force-iterations',
        '1000',
      ];
      if (version === 'luks2') args.push('--label', 'secret');
      await run('cryptsetup', [...args, img, '-'], { input: 'pw' });
      const { id, map } = await expectLikeBlkid(img);
      expect(id.version).toBe(version === 'luks1' ? '1' : '2');
      expect(map.method).toBe('sector-by-sector');
      expect(map.reason).toMatch(/encrypted/);
    });
  }

  it('LVM2 physical volume (made by pvcreate on a loop device)', async () => {
    const img = await sparseFile(join(dir, 'pv.img'), 16 * MiB);
    const loop = (await run('losetup', ['--find', '--show', img])).stdout.trim();
    try {
      await run('pvcreate', ['-q', '-y', '-ff', loop]);
      const b = await blkidExport(loop);
      const { id, map } = await detectFile(img);
      expect(id.type).toBe('LVM2_member');
      expect(id.uuid).toBe(b.UUID);
      expect(map.method).toBe('sector-by-sector');
    } finally {
      await run('losetup', ['-d', loop]);
    }
  });

  it('md RAID member with a 1.2 superblock (hand-built; checked by mdadm --examine and blkid)', async () => {
    // This kernel has no md driver, so mdadm --create cannot run: build the superblock, let mdadm judge it.
    const img = await sparseFile(join(dir, 'md.img'), 16 * MiB);
    const sb = Buffer.alloc(1024);
    sb.writeUInt32LE(0xa92b4efc, 0);
    sb.writeUInt32LE(1, 4); // major version
    Buffer.from('00112233445566778899aabbccddeeff', 'hex').copy(sb, 16); // set uuid
    sb.write('rescuehost:7', 32, 'latin1'); // set name
    sb.writeUInt32LE(1, 72); // level: raid1
    sb.writeBigUInt64LE(BigInt(16 * 2048 - 2048), 80); // size (sectors)
    sb.writeUInt32LE(2, 92); // raid disks
    sb.writeBigUInt64LE(2048n, 128); // data offset
    sb.writeBigUInt64LE(BigInt(16 * 2048 - 2048), 136); // data size
    sb.writeBigUInt64LE(8n, 144); // super offset: 8 sectors = 4 KiB
    sb.writeUInt32LE(2, 220); // max dev
    sb.writeUInt16LE(0, 256);
    sb.writeUInt16LE(1, 258);
    let sum = 0n;
    for (let i = 0; i < 256 + 2 * 2; i += 4) sum += BigInt(sb.readUInt32LE(i));
    sb.writeUInt32LE(Number((sum & 0xffffffffn) + (sum >> 32n)) >>> 0, 216);
    const h = await fsp.open(img, 'r+');
    await h.write(sb, 0, 1024, 4096);
    await h.close();
    const examine = await run('mdadm', ['--examine', img]);
    expect(examine.stdout).toMatch(/Version : 1\.2/);
    const { id, map } = await expectLikeBlkid(img);
    expect(id.version).toBe('1.2');
    expect(map.method).toBe('sector-by-sector');
  });

  it('a RAID1 member with a 1.0 superblock at the end is RAID first, although it also holds ext4 at 0', async () => {
    const img = await sparseFile(join(dir, 'md10.img'), 16 * MiB);
    await run('mkfs.ext4', ['-q', '-F', img, String(15 * 1024)]);
    const sb = Buffer.alloc(1024);
    sb.writeUInt32LE(0xa92b4efc, 0);
    sb.writeUInt32LE(1, 4);
    Buffer.from('ffeeddccbbaa99887766554433221100', 'hex').copy(sb, 16);
    const sectors = (16 * MiB) / 512;
    const offset = (sectors - 16) & ~7;
    sb.writeBigUInt64LE(BigInt(offset), 144);
    const h = await fsp.open(img, 'r+');
    await h.write(sb, 0, 1024, offset * 512);
    await h.close();
    const { id } = await detectFile(img);
    expect(id.type).toBe('linux_raid_member');
    expect(id.version).toBe('1.0');
  });

  it('BitLocker (Windows 7+ header with its FVE metadata block) as blkid, copied whole', async () => {
    const img = await sparseFile(join(dir, 'bde.img'), 8 * MiB);
    const boot = Buffer.alloc(512);
    boot.write('\xeb\x58\x90-FVE-FS-', 0, 'latin1');
    boot.writeBigUInt64LE(BigInt(2 * MiB), 176);
    boot[510] = 0x55;
    boot[511] = 0xaa;
    const h = await fsp.open(img, 'r+');
    await h.write(boot, 0, 512, 0);
    await h.write(Buffer.from('-FVE-FS-', 'latin1'), 0, 8, 2 * MiB);
    await h.close();
    expect((await blkidExport(img)).TYPE).toBe('BitLocker');
    const { id, map } = await detectFile(img);
    expect(id.type).toBe('BitLocker');
    expect(map.method).toBe('sector-by-sector');
    expect(map.reason).toMatch(/BitLocker/);
  });

  it('BitLocker To Go behind its decoy FAT32 boot sector is BitLocker, not vfat', async () => {
    const img = await sparseFile(join(dir, 'togo.img'), 64 * MiB);
    await run('mkfs.vfat', ['-F', '32', img]);
    const h = await fsp.open(img, 'r+');
    const boot = Buffer.alloc(512);
    await h.read(boot, 0, 512, 0);
    boot.write('\xeb\x58\x90MSWIN4.1', 0, 'latin1');
    boot.writeBigUInt64LE(BigInt(40 * MiB), 440);
    await h.write(boot, 0, 512, 0);
    await h.write(Buffer.from('-FVE-FS-', 'latin1'), 0, 8, 40 * MiB);
    await h.close();
    expect((await blkidExport(img)).TYPE).toBe('BitLocker');
    const { id, map } = await detectFile(img);
    expect(id.type).toBe('BitLocker');
    expect(id.version).toBe('To Go');
    expect(map.usedBytes).toBe(64 * MiB);
    // The same boot sector without FVE metadata where it points is a plain FAT32 again.
    const h2 = await fsp.open(img, 'r+');
    await h2.write(Buffer.alloc(8), 0, 8, 40 * MiB);
    await h2.close();
    expect((await detectFile(img)).id.type).toBe('vfat');
  });

  it('zeros, random bytes and tiny volumes are "unknown", copied whole, never an exception', async () => {
    for (const bytes of [
      Buffer.alloc(0),
      Buffer.alloc(100),
      Buffer.alloc(1 * MiB),
      Buffer.alloc(300 * 1024, 0xff),
    ]) {
      const src = new BufferSource(bytes);
      const id = await detectFilesystem(src);
      expect(id.type).toBe('unknown');
      const map = await usedMapOf(src, id);
      expect(map.usedBytes).toBe(bytes.length);
    }
  });
});
