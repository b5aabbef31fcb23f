/**
 * The `rescue` command line. From a checkout: `npm run --silent rescue -- <command> …`.
 * Exit codes: 0 success, 1 the operation failed (message + remedy on stderr), 2 bad usage,
 * 70 internal error.
 */
import { Declined } from './confirm.ts';
import { reportError, UsageError } from './output.ts';

const HELP = `rescue — disk imaging and rescue

Usage:
  rescue list [--json] [DISK-OR-IMAGE …]   disks, partitions, filesystems, labels, used/free
  rescue list --watch [--json]             the same, then follow disks being plugged in and out
  rescue backup disk SRC… --to DIR [options] --yes
  rescue backup partition DISK:N… --to DIR [options] --yes
  rescue backup system DISK --to DIR [options] --yes
      options: --name N  --compress none|normal|high  --password-file F  --split SIZE
               --sector-by-sector  --comment TEXT  --check  --no-folder  --json
  rescue backup incremental|differential IMAGE [--source DISK]… [--force] --yes
      a new point of IMAGE's backup chain: only what changed since the last point / the full
  rescue restore IMAGE --to TARGET|DISK:M | --to-free DISK [--point N|latest] [--partition N] [--disk N]
               [--password-file F] [--sector-by-sector] [--table mbr] --yes
      edit partitions: --fill | --shrink | --layout N=SIZE,… [--align] [--new-ids] [--scratch DIR]
  rescue clone disk SRC TARGET [options] --yes
  rescue clone partition SRC:N TARGET|TARGET:M | --to-free TARGET [options] --yes
  rescue clone system SRC TARGET [options] --yes
      options: --sector-by-sector  --no-verify  --allow-mounted  --json  and the edit-partitions options
  rescue merge IMAGE --to DIR [--name N] [--point N] --yes   full + incrementals → one new full image
  rescue check IMAGE [--point N] [--password-file F] [--json]   every point of the chain; exit 0 only when intact
  rescue info IMAGE [--point N] [--json] [--password-file F]
  rescue serve [--port P] [--listen ADDR] [--images DIR]… [--disk FILE]… [--state DIR] [--power]
      the web API on 127.0.0.1:8080; beyond loopback other computers pair with the printed PIN
  rescue media iso --out FILE [--fast] [--cache DIR]   the bootable rescue ISO (BIOS, UEFI, Secure Boot)
  rescue media usb --device DEV --iso FILE [--force] --yes   the ISO onto a USB stick, read back
  rescue media pxe --out DIR [--iso FILE]   kernel, initrds and boot.ipxe for network boot
  rescue pxe serve --interface IF [--full-dhcp --range A-B] [--images DIR]   network boot for a LAN
  rescue demo [--dir DIR]                  build a lab of disk-image files and list them
  rescue version                           print the version
  rescue help                              this text

Disks are block devices (/dev/sda) or image files; image files need no loop device.
Documentation: docs/cli.md
`;

/** Ctrl-C (or SIGTERM) cancels the running job cleanly: partial images are removed. */
function interruptSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write('\nrescue: stopping… (Ctrl-C again to quit at once)\n');
    ac.abort();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return ac.signal;
}

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
    case 'backup':
      return (await import('./commands/backup.ts')).backupCommand(rest, interruptSignal());
    case 'restore':
      return (await import('./commands/restore.ts')).restoreCommand(rest, interruptSignal());
    case 'clone':
      return (await import('./commands/clone.ts')).cloneCommand(rest, interruptSignal());
    case 'merge':
      return (await import('./commands/merge.ts')).mergeCommand(rest, interruptSignal());
    case 'check':
      return (await import('./commands/check.ts')).checkCommand(rest, interruptSignal());
    case 'info':
      return (await import('./commands/info.ts')).infoCommand(rest);
    case 'serve':
      return (await import('./commands/serve.ts')).serveCommand(rest, interruptSignal());
    case 'media':
      return (await import('./commands/media.ts')).mediaCommand(rest, interruptSignal());
    case 'pxe':
      return (await import('./commands/pxe.ts')).pxeCommand(rest, interruptSignal());
    case 'version':
    case '--version': {
      process.stdout.write(`${(await import('./version.ts')).TOOL}\n`);
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
    if (e instanceof Declined) {
      process.stderr.write(`rescue: nothing was changed (${e.message})\n`);
      process.exitCode = 3;
      return;
    }
    if ((e as Error)?.name === 'AbortError') {
      process.stderr.write('rescue: cancelled; nothing incomplete was left behind\n');
      process.exitCode = 130;
      return;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`rescue: ${e.message}\nRun "rescue help" for usage.\n`);
      process.exitCode = 2;
      return;
    }
    process.exitCode = reportError(e);
  },
);
