/**
 * Runs the vitest suite and ends with the plain "N passed, N failed, N skipped" line that CI reads,
 * keeping vitest's exit code.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

const report = '.vitest-report.json';
rmSync(report, { force: true });
const r = spawnSync(
  'vitest',
  ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
let code = r.status ?? 1;
try {
  const j = JSON.parse(readFileSync(report, 'utf8')) as {
    numPassedTests: number;
    numFailedTests: number;
    numPendingTests: number;
    numTodoTests: number;
    numTotalTests: number;
  };
  if (j.numTotalTests === 0) code = code || 1;
  process.stdout.write(
    `\n${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests + j.numTodoTests} skipped\n`,
  );
} catch {
  process.stdout.write('\n0 passed, 1 failed\n');
  code = code || 1;
}
process.exit(code);
