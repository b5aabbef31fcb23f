/** Questions before destructive steps: --yes answers them, --no declines, a terminal asks. */
import { createInterface } from 'node:readline/promises';
import { RescueError } from '../engine/errors.ts';

export interface Answers {
  yes?: boolean;
  no?: boolean;
  /** Machine-readable output: the summary is one JSON line. */
  json?: boolean;
}

export class Declined extends Error {}

/**
 * Shows `summary` and asks for `word` to be typed. Without a terminal and without --yes the
 * operation is refused (scripts must say --yes explicitly).
 */
export async function confirmTyped(summary: string, word: string, answers: Answers): Promise<void> {
  process.stderr.write(answers.json ? `${JSON.stringify({ type: 'confirm', summary })}\n` : `${summary}\n`);
  if (answers.no) throw new Declined('declined (--no)');
  if (answers.yes) return;
  if (!process.stdin.isTTY) {
    throw new RescueError(
      'E_CONFIRMATION_REQUIRED',
      'This operation overwrites data and needs a confirmation',
      'Add --yes to confirm (or --no to answer no), or run it in a terminal to be asked.',
    );
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`Type ${word} to continue, anything else to stop: `);
    if (answer.trim() !== word) throw new Declined('not confirmed');
  } finally {
    rl.close();
  }
}
