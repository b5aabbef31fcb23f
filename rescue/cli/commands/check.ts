/**
 * rescue check IMAGE [--point N|latest] [--password-file F] [--json] — checks every point of the
 * image's backup chain (or one point and the points it needs); exit 0 only when all is intact.
 */
import { checkChain } from '../../engine/image/index.ts';
import { ProgressMeter } from '../../engine/jobs/job.ts';
import { parseCommand, pointOption, readPasswordFile } from '../args.ts';
import { UsageError } from '../output.ts';
import { createReporter } from '../progress.ts';

export async function checkCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const parsed = parseCommand(argv, {
    'password-file': { type: 'string' },
    point: { type: 'string' },
    json: { type: 'boolean' },
  } as const);
  if (parsed.positionals.length !== 1) throw new UsageError('rescue check takes one IMAGE');
  const password = parsed.values['password-file']
    ? await readPasswordFile(parsed.values['password-file'])
    : undefined;
  const reporter = createReporter({ json: false, signal });
  let meter: ProgressMeter | undefined;
  let last = 0;
  const report = await checkChain(parsed.positionals[0], {
    password,
    point: pointOption(parsed.values.point),
    signal,
    onProgress: (done, total) => {
      meter ??= new ProgressMeter(reporter, 'check', total);
      meter.add(done - last);
      last = done;
    },
  });
  meter?.finish();
  reporter.close();
  if (parsed.values.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const p of report.points) {
      const verdict = !p.ok ? 'DAMAGED' : p.usable === false ? 'intact, but CANNOT BE RESTORED' : 'intact';
      const name = p.sequence ? `point ${p.sequence} (${p.type}) ${p.file}` : `point ${p.id} (${p.type})`;
      process.stdout.write(`${name}: ${verdict}\n`);
      for (const x of p.problems) process.stdout.write(`  [${x.code}] ${x.message}\n`);
      if (p.usable === false && p.why) process.stdout.write(`  cannot be restored: ${p.why}\n`);
      else if (p.usable && p.sequence) process.stdout.write('  can be restored\n');
    }
    for (const m of report.missing ?? [])
      process.stdout.write(`point ${m.id}: MISSING (the file of an earlier point is not in the folder)\n`);
    process.stdout.write(
      report.ok
        ? `${report.image}: intact (${report.chunks} chunks verified)\n`
        : `${report.image}: DAMAGED\n`,
    );
  }
  return report.ok ? 0 : 1;
}
