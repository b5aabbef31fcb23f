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

export const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
const rev = gitRevision();
export const TOOL = `rescue ${VERSION}${rev ? ` (${rev})` : ''}`;
