/** rescue check IMAGE [--password-file F] [--json] — exit 0 only when every part of the image is intact. */
import { checkImage } from '../../engine/image/index.ts';
import { ProgressMeter } from '../../engine/jobs/job.ts';
import { parseCommand, readPasswordFile } from '../args.ts';
import { UsageError } from '../output.ts';
import { createReporter } from '../progress.ts';

export async function checkCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const parsed = parseCommand(argv, {
    'password-file': { type: 'string' },
    json: { type: 'boolean' },
  } as const);
  if (parsed.positionals.length !== 1) throw new UsageError('rescue check takes one IMAGE');
  const password = parsed.values['password-file']
    ? await readPasswordFile(parsed.values['password-file'])
    : undefined;
  const reporter = createReporter({ json: false, signal });
  let meter: ProgressMeter | undefined;
  let last = 0;
  const report = await checkImage(parsed.positionals[0], {
    password,
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
      process.stdout.write(`point ${p.id} (${p.type}): ${p.ok ? 'intact' : 'DAMAGED'}\n`);
      for (const x of p.problems) process.stdout.write(`  [${x.code}] ${x.message}\n`);
    }
    process.stdout.write(
      report.ok
        ? `${report.image}: intact (${report.chunks} chunks verified)\n`
        : `${report.image}: DAMAGED\n`,
    );
  }
  return report.ok ? 0 : 1;
}
