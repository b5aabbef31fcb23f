/**
 * rescue merge IMAGE --to DIR [--name N] [--point N|latest] [--password-file F] [--json] --yes
 * A full backup and its incremental points → one new full image (the chain is left as it is).
 * stdout's last line is the path of the merged image's first file.
 */
import { runMerge } from '../../engine/jobs/merge.ts';
import { parseCommand, pointOption, readPasswordFile } from '../args.ts';
import { formatBytes, UsageError } from '../output.ts';
import { createReporter } from '../progress.ts';
import { TOOL } from '../version.ts';

const OPTIONS = {
  to: { type: 'string' },
  name: { type: 'string' },
  point: { type: 'string' },
  'password-file': { type: 'string' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

export async function mergeCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const parsed = parseCommand(argv, OPTIONS);
  const v = parsed.values;
  if (parsed.positionals.length !== 1)
    throw new UsageError('rescue merge takes one IMAGE (any file of the chain)');
  if (!v.to) throw new UsageError('--to DIR is required: the folder that receives the merged image');
  if (v.no) {
    process.stderr.write('rescue: merge not started (--no)\n');
    return 3;
  }
  const reporter = createReporter({ json: !!v.json, signal });
  try {
    const r = await runMerge(
      {
        image: parsed.positionals[0],
        destination: v.to,
        name: v.name,
        point: pointOption(v.point),
        password: v['password-file'] ? await readPasswordFile(v['password-file']) : undefined,
        tool: TOOL,
      },
      reporter,
    );
    reporter.close();
    if (v.json) process.stderr.write(`${JSON.stringify({ type: 'done', ...r })}\n`);
    else
      process.stderr.write(
        `Merged points ${r.merged.map((p) => p.sequence).join(', ')} (${formatBytes(r.usedBytes)}) into ${r.files.length} file(s), ${formatBytes(r.storedBytes)}, in ${r.seconds.toFixed(1)} s; the original files are unchanged\n`,
      );
    process.stdout.write(`${r.firstFile}\n`);
    return 0;
  } finally {
    reporter.close();
  }
}
