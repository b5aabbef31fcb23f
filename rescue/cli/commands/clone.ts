/**
 * rescue clone disk SRC TARGET
 * rescue clone partition SRC:N TARGET | TARGET:M | --to-free TARGET
 * rescue clone system SRC TARGET
 *   [--sector-by-sector] [--no-verify] [--allow-mounted]
 *   [--fill | --shrink | --layout SPEC] [--align] [--new-ids] [--scratch DIR] [--json] --yes
 */
import { stat } from 'node:fs/promises';
import { type CloneRequest, runClone } from '../../engine/jobs/clone.ts';
import { parseCommand, parseDiskPartition } from '../args.ts';
import { EDIT_OPTIONS, parseEditOptions } from '../edit-options.ts';
import { formatBytes, UsageError } from '../output.ts';
import { TOOL } from '../version.ts';
import { confirmAndRun } from './restore.ts';

const OPTIONS = {
  'to-free': { type: 'string' },
  'sector-by-sector': { type: 'boolean' },
  verify: { type: 'boolean' },
  'no-verify': { type: 'boolean' },
  'allow-mounted': { type: 'boolean' },
  ...EDIT_OPTIONS,
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

/**
 * DISK:N → disk and partition; a path that exists as given is never split ("/dev/disk/by-id/x:1"
 * style names exist).
 */
async function diskAndPartition(text: string): Promise<{ disk: string; partition?: number }> {
  const { disk, partition } = parseDiskPartition(text);
  if (partition === undefined || (await stat(text).catch(() => undefined))) return { disk: text };
  return { disk, partition };
}

export async function cloneCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const [kind, ...rest] = argv;
  if (kind !== 'disk' && kind !== 'partition' && kind !== 'system') {
    throw new UsageError('say what to clone: rescue clone disk|partition|system SOURCE TARGET');
  }
  const parsed = parseCommand(rest, OPTIONS);
  const v = parsed.values;
  const pos = parsed.positionals;
  if (v.verify && v['no-verify']) throw new UsageError('--verify and --no-verify contradict each other');
  if (v['to-free'] !== undefined && kind !== 'partition')
    throw new UsageError('--to-free is for partition clones: rescue clone partition SRC:N --to-free DISK');
  const wanted = v['to-free'] !== undefined ? 1 : 2;
  if (pos.length !== wanted) {
    throw new UsageError(
      kind === 'partition'
        ? 'rescue clone partition takes SRC:N and a TARGET (a partition, DISK:M, or --to-free DISK)'
        : `rescue clone ${kind} takes a SOURCE disk and a TARGET disk`,
    );
  }
  const req: CloneRequest = {
    kind,
    source: pos[0],
    target: v['to-free'] ?? pos[1],
    sectorBySector: !!v['sector-by-sector'],
    allowMounted: !!v['allow-mounted'],
    verify: !v['no-verify'],
    edit: parseEditOptions(v),
    tool: TOOL,
  };
  if (kind === 'partition') {
    const src = await diskAndPartition(pos[0]);
    req.source = src.disk;
    req.sourcePartition = src.partition;
    if (v['to-free'] !== undefined) {
      req.toFree = true;
    } else {
      const to = await diskAndPartition(pos[1]);
      req.target = to.disk;
      req.targetPartition = to.partition;
    }
  }
  const from =
    kind === 'system'
      ? `the system partitions of ${req.source}`
      : req.sourcePartition !== undefined
        ? `partition ${req.sourcePartition} of ${req.source}`
        : req.source;
  // Edit partitions: the planned layout is part of what is confirmed (refusals come here already).
  return confirmAndRun({
    summary: `Clone ${from}${req.sectorBySector ? ' sector by sector' : ''}`,
    target: req.target,
    targetPartition: req.targetPartition,
    toFree: req.toFree,
    edit: req.edit,
    flags: v,
    signal,
    preview: () => runClone({ ...req, preview: true }, { signal, emit: () => {} }),
    run: (reporter) => runClone(req, reporter),
    done: (r) => {
      const checked =
        r.verifiedBytes > 0 ? `; read back and verified in ${r.verifySeconds.toFixed(1)} s` : '';
      return `Cloned ${formatBytes(r.bytesWritten)} to ${r.target}${r.partition ? ` partition ${r.partition}` : ''} in ${r.seconds.toFixed(1)} s${checked}`;
    },
  });
}
