/** The CLI's edit-partitions options: what they become, and the combinations refused as usage errors. */
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../rescue/cli/args.ts';
import { describeEditOptions, EDIT_OPTIONS, parseEditOptions } from '../../rescue/cli/edit-options.ts';
import { UsageError } from '../../rescue/cli/output.ts';

const parse = (argv: string[]) => parseEditOptions(parseCommand(argv, EDIT_OPTIONS).values);

describe('edit options', () => {
  it('turn into EditOptions; none given is a plain copy (undefined)', () => {
    expect(parse([])).toBeUndefined();
    expect(parse(['--fill'])).toEqual({ mode: 'fill' });
    expect(parse(['--shrink', '--align', '--scratch', '/var/tmp'])).toEqual({
      mode: 'shrink',
      align: true,
      scratch: '/var/tmp',
    });
    expect(parse(['--layout', '2=20G,3=fill', '--new-ids'])).toEqual({
      mode: 'layout',
      layout: '2=20G,3=fill',
      newIds: true,
    });
    expect(parse(['--align'])).toEqual({ mode: 'copy', align: true });
    expect(describeEditOptions(parse(['--fill', '--align', '--new-ids']))).toBe(
      'add unused space to the partitions (--fill), partitions aligned to 1 MiB, new disk and partition identifiers',
    );
  });

  it('refuses conflicting modes and bad layouts as usage errors', () => {
    for (const argv of [
      ['--fill', '--shrink'],
      ['--fill', '--layout', '2=1G'],
      ['--shrink', '--layout', '2=1G'],
      ['--layout', '2=lots'],
      ['--layout', ''],
      ['--scratch', ''],
    ]) {
      expect(() => parse(argv), argv.join(' ')).toThrow(UsageError);
    }
    expect(() => parse(['--fill', '--shrink'])).toThrow(/--fill and --shrink cannot be combined/);
    expect(() => parse(['--layout', '2=lots'])).toThrow(/--layout: partition 2's size: "lots" is not a size/);
  });
});
