/**
 * An $MFT whose $DATA runlist continues in an extension record through an $ATTRIBUTE_LIST (what
 * a badly fragmented MFT looks like). libntfs-3g reads the same image, so it is the oracle; file
 * records past the split are reachable only through the extension record.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { RescueError } from '../../rescue/engine/errors.ts';
import { ntfs, ntfsAllocationMap } from '../../rescue/engine/filesystems/ntfs.ts';
import { parseAttributeList } from '../../rescue/engine/filesystems/ntfs-attrs.ts';
import { parseNtfsBootSector } from '../../rescue/engine/filesystems/ntfs-boot.ts';
import {
  ATTR,
  listAttributes,
  parseFileRecord,
  protectRecord,
} from '../../rescue/engine/filesystems/ntfs-record.ts';
import {
  assertWellFormedExtents,
  copyUsedExtents,
  makeTempDir,
  pseudoRandomBytes,
  run,
  sha256,
} from '../fixtures/lab.ts';
import {
  makeNtfs,
  ntfsinfoUsage,
  readTree,
  splitMftIntoAttributeList,
  withNtfsMount,
} from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

let dir: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ntfs-al-');
});
afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

async function build(
  clusterSize: number,
): Promise<{ image: string; expected: Map<string, string>; ext: number }> {
  const image = join(dir, `al-${clusterSize}.img`);
  await makeNtfs(image, { size: SIZE, clusterSize, label: 'AttrList' });
  const expected = new Map<string, string>();
  await withNtfsMount(image, join(dir, `mnt-${clusterSize}`), async (mnt) => {
    for (let i = 0; i < 150; i++) {
      const data = pseudoRandomBytes(200 + i * 97, i + 1);
      await fsp.writeFile(join(mnt, `f${i}.bin`), data);
      expected.set(`f${i}.bin`, sha256(data));
    }
    const hib = Buffer.concat([Buffer.from('HIBR'), pseudoRandomBytes(8188, 5)]);
    await fsp.writeFile(join(mnt, 'hiberfil.sys'), hib);
    expected.set('hiberfil.sys', sha256(hib));
  });
  const { extensionRecord } = await splitMftIntoAttributeList(image);
  return { image, expected, ext: extensionRecord };
}

describe.each([4096, 512])('$MFT with an attribute list (%i-byte clusters)', (clusterSize) => {
  it('libntfs-3g and our module both follow it; the used-extent copy is complete', async () => {
    const { image, expected, ext } = await build(clusterSize);
    const info = await run('ntfsinfo', ['-v', '-i', '0', image]);
    expect(info.stdout).toContain('$ATTRIBUTE_LIST (0x20) from mft record 0');
    expect(info.stdout).toContain(`$DATA (0x80) from mft record ${ext} `);
    const fix = await run('ntfsfix', ['-n', image], { allowFail: true });
    expect(fix.code, fix.stdout + fix.stderr).toBe(0);

    const src = await FileSource.open(image);
    const id = await ntfs.identify(src);
    // The volume looks hibernated (hiberfil.sys starts with HIBR), so the careful default copies it
    // whole; the bitmap map is what this test is about.
    const careful = await ntfs.usedMap!(src);
    expect(careful.method).toBe('sector-by-sector');
    expect(careful.reason).toMatch(/hibernated|Fast Startup/);
    const map = await ntfsAllocationMap(src);
    await src.close();
    // hiberfil.sys was created after 150 files: its record lies past the split.
    expect(id.state).toMatchObject({ hibernated: true, hiberfileSignature: 'HIBR', dirty: false });
    expect(id.label).toBe('AttrList');
    assertWellFormedExtents(map.extents, SIZE);
    const u = await ntfsinfoUsage(image);
    const oracle = (u.clusters - u.free) * u.clusterSize;
    console.log(
      `[ntfs attribute list, ${clusterSize} B clusters] ours ${map.usedBytes} B, ntfsinfo ${oracle} B`,
    );
    expect(map.usedBytes - oracle).toBeGreaterThanOrEqual(0);
    expect(map.usedBytes - oracle).toBeLessThanOrEqual(512);

    const copy = join(dir, `copy-${clusterSize}.img`);
    await copyUsedExtents(image, map.extents, copy, SIZE);
    const { value: tree } = await withNtfsMount(copy, join(dir, `mnt-copy-${clusterSize}`), readTree, {
      readOnly: true,
    });
    expect(tree.files).toEqual(expected);
  });
});

describe('a broken attribute list is refused, not guessed around', () => {
  it('tail extent pointing at the wrong record → RescueError from usedMap, a warning from identify', async () => {
    const { image } = await build(4096);
    const h = await fsp.open(image, 'r+');
    const boot = parseNtfsBootSector(await h.read(Buffer.alloc(512), 0, 512, 0).then((r) => r.buffer));
    const at = boot.mftLcn * boot.clusterSize;
    const raw = Buffer.alloc(boot.mftRecordSize);
    await h.read(raw, 0, raw.length, at);
    const rec = parseFileRecord(raw, boot.mftRecordSize, 'rec 0');
    const al = listAttributes(rec, 'rec 0').find((a) => a.type === ATTR.ATTRIBUTE_LIST);
    if (!al || al.nonResident) throw new Error('no resident attribute list');
    const entries = parseAttributeList(al.value);
    const tail = entries.findIndex((e) => e.type === ATTR.DATA && e.lowestVcn > 0);
    // Each entry is 0x20 bytes; the reference is at +0x10. Point it at record 2 ($LogFile).
    al.value.writeUInt32LE(2, tail * 0x20 + 0x10);
    protectRecord(rec.bytes);
    await h.write(rec.bytes, 0, rec.bytes.length, at);
    await h.close();

    const src = await FileSource.open(image);
    await expect(ntfs.usedMap!(src)).rejects.toBeInstanceOf(RescueError);
    const id = await ntfs.identify(src);
    await src.close();
    expect(id.type).toBe('ntfs');
    expect(id.warnings?.join(' ')).toMatch(/\$MFT could not be read/);
  });
});
