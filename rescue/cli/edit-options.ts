/**
 * The "Edit partitions" options shared by `rescue restore` and `rescue clone` (manual 5.7):
 * --fill, --shrink, --layout SPEC, --align, --new-ids, --scratch DIR.
 */
import type { EditOptions } from '../engine/resize/layout.ts';
import { parseLayoutSpec } from '../engine/resize/layout.ts';
import { UsageError } from './output.ts';

/** node:util parseArgs option config; spread into a command's own options. */
export const EDIT_OPTIONS = {
  fill: { type: 'boolean' },
  shrink: { type: 'boolean' },
  layout: { type: 'string' },
  align: { type: 'boolean' },
  'new-ids': { type: 'boolean' },
  scratch: { type: 'string' },
} as const;

export interface EditValues {
  fill?: boolean;
  shrink?: boolean;
  layout?: string;
  align?: boolean;
  'new-ids'?: boolean;
  scratch?: string;
}

/** The edit options of parsed values; undefined when none was given (a plain copy). */
export function parseEditOptions(values: EditValues): EditOptions | undefined {
  const modes = [
    values.fill && '--fill',
    values.shrink && '--shrink',
    values.layout !== undefined && '--layout',
  ];
  const given = modes.filter((m): m is string => typeof m === 'string');
  if (given.length > 1) {
    throw new UsageError(
      `${given.join(' and ')} cannot be combined: --fill grows partitions into a larger disk, --shrink fits them onto a smaller one, --layout sets sizes by hand`,
    );
  }
  if (values.layout !== undefined) {
    try {
      parseLayoutSpec(values.layout);
    } catch (e) {
      throw new UsageError(`--layout: ${(e as Error).message}`);
    }
  }
  if (values.scratch !== undefined && values.scratch.trim() === '')
    throw new UsageError('--scratch takes a folder');
  const anything = given.length > 0 || values.align || values['new-ids'] || values.scratch !== undefined;
  if (!anything) return undefined;
  const mode: EditOptions['mode'] = values.fill
    ? 'fill'
    : values.shrink
      ? 'shrink'
      : values.layout !== undefined
        ? 'layout'
        : 'copy';
  const out: EditOptions = { mode };
  if (values.layout !== undefined) out.layout = values.layout;
  if (values.align) out.align = true;
  if (values['new-ids']) out.newIds = true;
  if (values.scratch !== undefined) out.scratch = values.scratch;
  return out;
}

/** The options in words, for the confirmation ("fill, aligned to 1 MiB, new ids"). */
export function describeEditOptions(edit: EditOptions | undefined): string | undefined {
  if (!edit) return undefined;
  const words = [
    edit.mode === 'fill'
      ? 'add unused space to the partitions (--fill)'
      : edit.mode === 'shrink'
        ? 'shrink partitions to fit (--shrink)'
        : edit.mode === 'layout'
          ? `manual layout ${edit.layout}`
          : 'copy without resizing',
  ];
  if (edit.align) words.push('partitions aligned to 1 MiB');
  if (edit.newIds) words.push('new disk and partition identifiers');
  return words.join(', ');
}
