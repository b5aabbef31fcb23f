/**
 * Options only tests can set: a symbol-keyed property cannot come from a command line, a JSON
 * request body or a config file, so the CLI and the server cannot reach these. Not re-exported
 * from index.ts.
 */
import type { ScryptParams } from './types.ts';

export const IMAGE_TEST_HOOKS = Symbol('rescue.image.test-hooks');

export interface ImageTestHooks {
  /** Allow volumes smaller than 50 MiB so that split tests stay small. */
  minSplitBytes?: number;
  /** Cheaper scrypt parameters (written to the header, so readers follow them). */
  scrypt?: ScryptParams;
  /** /proc/self/mountinfo text to judge the destination with (FAT detection). */
  mountinfo?: string;
  /** Write batches of this many bytes instead of 8 MiB (so small crash tests hit the disk). */
  flushBytes?: number;
  /** Called before each volume is renamed to its final name (crash tests stop there). */
  beforeRename?: (finalPath: string) => Promise<void>;
}
