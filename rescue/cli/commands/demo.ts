/**
 * `rescue demo` (what `npm start` runs): builds the lab of disk images, lists them, then does what
 * the product is for on one of them — backs up the UEFI dual-boot disk (used blocks only,
 * compressed), checks the image, adds an incremental point (nothing changed: nothing stored),
 * restores the full onto a new disk file and lists the result.
 */
import { promises as fsp } from 'node:fs';
import { join, relative } from 'node:path';
import { inventory } from '../../engine/devices/inventory.ts';
import { checkImage } from '../../engine/image/index.ts';
import { runBackup } from '../../engine/jobs/backup.ts';
import { runPointBackup } from '../../engine/jobs/point-backup.ts';
import { runRestore } from '../../engine/jobs/restore.ts';
import { parseCommand } from '../args.ts';
import { buildLab } from '../lab.ts';
import { formatBytes } from '../output.ts';
import { createReporter } from '../progress.ts';
import { TOOL } from '../version.ts';
import { renderInventory } from './list.ts';

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { dir: { type: 'string' } } as const);
  const dir = values.dir ?? join(process.cwd(), 'lab');
  const rel = (p: string) => relative(process.cwd(), p) || p;
  const say = (line: string) => process.stderr.write(`${line}\n`);
  say(`Rescue demo: a lab of disk images in ${dir}`);
  const disks = await buildLab(dir, (line) => say(`  ${line}`));
  for (const d of disks) say(`  ${rel(d.path).padEnd(18)} ${d.description}`);
  say(`\n$ rescue list ${disks.map((d) => rel(d.path)).join(' ')}\n`);
  process.stdout.write(renderInventory((await inventory(disks.map((d) => d.path))).disks));

  const source = disks[1].path;
  const images = join(dir, 'images');
  await fsp.rm(images, { recursive: true, force: true });
  await fsp.mkdir(images, { recursive: true });
  const restored = join(dir, 'restored.img');
  await fsp.rm(restored, { force: true });
  const reporter = createReporter({ json: false, signal: new AbortController().signal });
  say(`$ rescue backup disk ${rel(source)} --to ${rel(images)} --name dual-boot --yes`);
  const b = await runBackup(
    {
      kind: 'disk',
      sources: [{ path: source }],
      destination: images,
      name: 'dual-boot',
      compression: 'normal',
      tool: TOOL,
    },
    reporter,
  );
  reporter.close();
  say(
    `  ${formatBytes(b.usedBytes)} of used data → ${formatBytes(b.storedBytes)} image in ${b.seconds.toFixed(1)} s: ${rel(b.firstFile)}`,
  );
  say(`$ rescue check ${rel(b.firstFile)}`);
  const c = await checkImage(b.firstFile, {});
  say(`  ${c.ok ? 'intact' : 'DAMAGED'}: ${c.chunks} chunks verified`);
  say(`$ rescue backup incremental ${rel(b.firstFile)} --yes`);
  const inc = await runPointBackup({ type: 'incremental', image: b.firstFile, tool: TOOL }, reporter);
  reporter.close();
  say(
    `  point ${inc.sequence}: ${formatBytes(inc.changedBytes)} of ${formatBytes(inc.usedBytes)} changed since point ${inc.base.sequence} → ${formatBytes(inc.storedBytes)} file: ${rel(inc.firstFile)}`,
  );
  say(`$ rescue restore ${rel(b.firstFile)} --to ${rel(restored)} --yes`);
  const r = await runRestore({ image: b.firstFile, target: restored }, reporter);
  reporter.close();
  say(`  ${formatBytes(r.bytesWritten)} written in ${r.seconds.toFixed(1)} s`);
  say(`$ rescue list ${rel(restored)}\n`);
  process.stdout.write(renderInventory((await inventory([restored])).disks));
  say('Try: npm run --silent rescue -- info lab/images/dual-boot/dual-boot.rimg');
  say(
    'Or the web UI: npm run --silent rescue -- serve --images lab/images --disk lab/uefi-gpt.img --disk lab/restored.img, then open http://127.0.0.1:8080/',
  );
  return c.ok ? 0 : 1;
}
