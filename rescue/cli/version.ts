/** The tool's name and version as images and logs record it ("rescue 0.1.0 (abc1234)"). */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

function gitRevision(): string | undefined {
  if (process.env.RESCUE_REVISION) return process.env.RESCUE_REVISION;
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: new URL('../..', import.meta.url),
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
  } catch {
    return undefined;
  }
}

/** Baked in by build/sea.ts for the single binary; from package.json in a checkout. */
const BUILT_VERSION = process.env.RESCUE_BUILT_VERSION;

export const VERSION =
  BUILT_VERSION ||
  (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string })
    .version;
const rev = gitRevision();
export const TOOL = `rescue ${VERSION}${rev ? ` (${rev})` : ''}`;
