/**
 * Network locations come from a form (and from the API): whatever is typed, validateLocation either
 * refuses it with E_SHARE_INVALID or lets through only what can safely reach mount.cifs' options,
 * smbnetfs' config file and a path: no line breaks or NULs, no folder escaping the share.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { type SmbLocation, validateLocation } from '../../rescue/engine/shares/smb.ts';

const piece = fc.oneof(
  fc.string(),
  fc.constantFrom(
    '..',
    '.',
    '/',
    '\n',
    '\r',
    '\0',
    'a\nb',
    '../etc',
    'nas.local',
    '192.0.2.1',
    'backups',
    'x y',
  ),
);

describe('validateLocation', () => {
  it('accepts only locations whose fields cannot break out of a config line, an option or the share', () => {
    fc.assert(
      fc.property(
        fc.record({
          host: piece,
          share: piece,
          folder: fc.option(piece, { nil: undefined }),
          username: fc.option(piece, { nil: undefined }),
          password: fc.option(piece, { nil: undefined }),
          domain: fc.option(piece, { nil: undefined }),
        }),
        (loc: SmbLocation) => {
          try {
            validateLocation(loc);
          } catch (e) {
            expect(isRescueError(e) && e.code === 'E_SHARE_INVALID').toBe(true);
            return;
          }
          for (const v of Object.values(loc)) if (typeof v === 'string') expect(v).not.toMatch(/[\n\r\0]/);
          expect(loc.host).toMatch(/^[A-Za-z0-9[\]:.-]+$/);
          expect(loc.share).not.toMatch(/[/\\]/);
          // Neither may step out of the folder the share is mounted under (smbnetfs: ROOT/host/share).
          expect(['.', '..']).not.toContain(loc.host);
          expect(['.', '..']).not.toContain(loc.share);
          const folder = loc.folder ?? '';
          expect(folder.startsWith('/')).toBe(false);
          expect(folder.split('/')).not.toContain('..');
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('refuses the obvious escapes by name', () => {
    const base = { host: 'nas.local', share: 'backups' };
    expect(() => validateLocation(base)).not.toThrow();
    for (const bad of [
      { ...base, folder: '../../etc' },
      { ...base, folder: '/etc' },
      { ...base, share: 'a/b' },
      { ...base, host: '-o evil' },
      { ...base, host: '..' },
      { ...base, share: '..' },
      { ...base, share: 'a\nb' },
      { ...base, password: 'x\nauth "other" "u" "p"' },
    ])
      expect(() => validateLocation(bad)).toThrow(/not valid/);
  });
});
