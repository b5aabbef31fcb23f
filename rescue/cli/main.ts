/**
 * The `rescue` command line. From a checkout: `npm run --silent rescue -- <command> …`.
 * Exit codes: 0 success, 1 the operation failed (message + remedy on stderr), 2 bad usage,
 * 70 internal error.
 */
import { readFileSync } from 'node:fs';
import { reportError, UsageError } from './output.ts';

const HELP = `rescue — disk imaging and rescue

Usage:
  rescue list [--json] [DISK-OR-IMAGE …]   disks, partitions, filesystems, labels, used/free
  rescue list --watch [--json]             the same, then follow disks being plugged in and out
  rescue demo [--dir DIR]                  build a lab of disk-image files and list them
  rescue version                           print the version
  rescue help                              this text

Disks are block devices (/dev/sda) or image files; image files need no loop device.
Documentation: docs/cli.md
`;

async function main(argv: string[]): Promise<number> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) {
    process.stderr.write(
      `rescue needs Node.js 24 or later (this is ${process.version}); run it through npm run.\n`,
    );
    return 2;
  }
  const [command, ...rest] = argv;
  switch (command) {
    case 'list':
      return (await import('./commands/list.ts')).listCommand(rest);
    case 'demo':
      return (await import('./commands/demo.ts')).demoCommand(rest);
    case 'version':
    case '--version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version: string;
      };
      process.stdout.write(`rescue ${pkg.version}\n`);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`rescue: ${e.message}\nRun "rescue help" for usage.\n`);
      process.exitCode = 2;
      return;
    }
    process.exitCode = reportError(e);
  },
);
