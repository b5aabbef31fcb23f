import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const ent of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...(await sources(p)));
    else if (ent.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('docs/errors.md', () => {
  it('lists every error code the product can raise', async () => {
    const doc = await fsp.readFile(join(ROOT, 'docs/errors.md'), 'utf8');
    const used = new Set<string>();
    const files = [
      ...(await sources(join(ROOT, 'rescue'))),
      ...(await sources(join(ROOT, 'iso-builder'))),
      ...(await sources(join(ROOT, 'pxe'))),
    ];
    for (const file of files) {
      const text = await fsp.readFile(file, 'utf8');
      for (const m of text.matchAll(/RescueError\(\s*'(E_[A-Z0-9_]+)'/g)) used.add(m[1]);
      for (const m of text.matchAll(/code: '(E_[A-Z0-9_]+)'/g)) used.add(m[1]);
    }
    expect(used.size).toBeGreaterThan(10);
    const missing = [...used].filter((c) => !doc.includes(`\`${c}\``));
    expect(missing).toEqual([]);
  });
});
