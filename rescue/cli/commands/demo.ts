/** `rescue demo` (what `npm start` runs): builds the lab of disk images and lists them. */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { inventory } from '../../engine/devices/inventory.ts';
import { buildLab } from '../lab.ts';
import { UsageError } from '../output.ts';
import { renderInventory } from './list.ts';

export async function demoCommand(argv: string[]): Promise<number> {
  let values: { dir?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { dir: { type: 'string' } } }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const dir = values.dir ?? join(process.cwd(), 'lab');
  process.stderr.write(`Rescue demo: a lab of disk images in ${dir}\n`);
  const disks = await buildLab(dir, (line) => process.stderr.write(`  ${line}\n`));
  for (const d of disks)
    process.stderr.write(`  ${d.path.slice(dir.length + 1).padEnd(14)} ${d.description}\n`);
  process.stderr.write(
    `\n$ rescue list ${disks.map((d) => d.path.slice(process.cwd().length + 1)).join(' ')}\n\n`,
  );
  const inv = await inventory(disks.map((d) => d.path));
  process.stdout.write(renderInventory(inv.disks));
  process.stderr.write('Try: npm run --silent rescue -- list --json lab/uefi-gpt.img\n');
  return 0;
}
