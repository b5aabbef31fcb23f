/**
 * The TFTP server against real clients on loopback: curl (tftp://, blksize, tsize), atftp (options
 * incl. windowsize, raw file names), tftp-hpa (plain RFC 1350). Content compared by sha256; block
 * numbers rolling over; 200 transfers at once; per-client and MTU block-size caps; the root's walls
 * (.., absolute paths, symbolic links out); uploads refused. Plus codec round trips and fuzzing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTftp, encodeTftp, OP, TftpDecodeError, type TftpPacket } from '../../pxe/tftp/codec.ts';
import { type TftpEvent, TftpServer } from '../../pxe/tftp/server.ts';
import { sha256 } from '../fixtures/lab.ts';

const run = promisify(execFile);

describe('TFTP server with real clients', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rescue-tftp-'));
  const root = join(dir, 'root');
  const out = join(dir, 'out');
  const events: TftpEvent[] = [];
  let server: TftpServer;
  let capped: TftpServer;
  const files: Record<string, Buffer> = {
    'undionly.kpxe': randomBytes(3 * 1024 * 1024 + 123),
    'exact.bin': randomBytes(512 * 40), // a multiple of the block size: ends with an empty block
    'empty.bin': Buffer.alloc(0),
    'efi/snponly.efi': randomBytes(200_000),
    'big.img': randomBytes(34 * 1024 * 1024), // > 65535 blocks of 512: block numbers roll over
  };

  beforeAll(async () => {
    mkdirSync(join(root, 'efi'), { recursive: true });
    mkdirSync(out, { recursive: true });
    for (const [name, data] of Object.entries(files)) writeFileSync(join(root, name), data);
    writeFileSync(join(dir, 'secret.txt'), 'outside the root\n');
    symlinkSync('../secret.txt', join(root, 'escape.txt'));
    symlinkSync('efi/snponly.efi', join(root, 'alias.efi'));
    server = new TftpServer({ root, address: '127.0.0.1', port: 0, onEvent: (e) => events.push(e) });
    await server.start();
    capped = new TftpServer({
      root,
      address: '127.0.0.1',
      port: 0,
      maxBlksize: 1468,
      clientBlksize: { '127.0.0.1': 600 },
      onEvent: (e) => events.push(e),
    });
    await capped.start();
  });

  afterAll(async () => {
    await server.close();
    await capped.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const curl = (port: number, path: string, extra: string[] = []) =>
    run('curl', [
      '-s',
      '-S',
      '--max-time',
      '60',
      ...extra,
      '-o',
      join(out, 'curl.bin'),
      `tftp://127.0.0.1:${port}/${path}`,
    ]);

  it('curl with blksize and tsize gets every byte', async () => {
    await curl(server.port, 'undionly.kpxe', ['--tftp-blksize', '1428']);
    expect(sha256(readFileSync(join(out, 'curl.bin')))).toBe(sha256(files['undionly.kpxe']));
    const done = events.findLast((e) => e.type === 'done' && e.file.endsWith('undionly.kpxe'));
    expect(done?.options).toMatchObject({ blksize: '1428' });
  });

  it('files of exactly N blocks, empty files, subfolders and links inside the root', async () => {
    for (const [path, data] of [
      ['exact.bin', files['exact.bin']],
      ['empty.bin', files['empty.bin']],
      ['efi/snponly.efi', files['efi/snponly.efi']],
      ['alias.efi', files['efi/snponly.efi']],
    ] as const) {
      await curl(server.port, path);
      expect(sha256(readFileSync(join(out, 'curl.bin'))), path).toBe(sha256(data));
    }
  });

  it('tftp-hpa (plain RFC 1350, no options) gets every byte', async () => {
    const dest = join(out, 'hpa.bin');
    await run('tftp', [
      '-m',
      'binary',
      '127.0.0.1',
      String(server.port),
      '-c',
      'get',
      'efi/snponly.efi',
      dest,
    ]);
    expect(sha256(readFileSync(dest))).toBe(sha256(files['efi/snponly.efi']));
  });

  it('atftp with windowsize 16 and blksize 512 across the block-number rollover (34 MiB)', async () => {
    const dest = join(out, 'big.bin');
    await run(
      'atftp',
      [
        '--option',
        'blksize 512',
        '--option',
        'windowsize 16',
        '--option',
        'tsize 0',
        '-g',
        '-r',
        'big.img',
        '-l',
        dest,
        '127.0.0.1',
        String(server.port),
      ],
      { timeout: 120_000 },
    );
    expect(sha256(readFileSync(dest))).toBe(sha256(files['big.img']));
    const done = events.findLast((e) => e.type === 'done' && e.file === 'big.img');
    expect(done?.options).toEqual({
      blksize: '512',
      windowsize: '16',
      tsize: String(files['big.img'].length),
    });
  }, 180_000);

  it('200 transfers at once', async () => {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        run('curl', [
          '-s',
          '-S',
          '--max-time',
          '120',
          '-o',
          join(out, `p${i}.bin`),
          `tftp://127.0.0.1:${server.port}/efi/snponly.efi`,
        ]),
      ),
    );
    const want = sha256(files['efi/snponly.efi']);
    for (let i = 0; i < 200; i++) expect(sha256(readFileSync(join(out, `p${i}.bin`)))).toBe(want);
  }, 180_000);

  it('caps the block size per client and by the link MTU', async () => {
    await curl(capped.port, 'undionly.kpxe', ['--tftp-blksize', '1428']);
    expect(sha256(readFileSync(join(out, 'curl.bin')))).toBe(sha256(files['undionly.kpxe']));
    expect(
      events.findLast((e) => e.type === 'done' && e.file.endsWith('undionly.kpxe'))?.options?.blksize,
    ).toBe('600');
    const noClientCap = new TftpServer({
      root,
      address: '127.0.0.1',
      port: 0,
      maxBlksize: 1468,
      onEvent: (e) => events.push(e),
    });
    await noClientCap.start();
    try {
      await curl(noClientCap.port, 'exact.bin', ['--tftp-blksize', '65464']);
      expect(
        events.findLast((e) => e.type === 'done' && e.file.endsWith('exact.bin'))?.options?.blksize,
      ).toBe('1468');
    } finally {
      await noClientCap.close();
    }
  });

  it('refuses .., symbolic links out of the root, missing files and uploads, with TFTP errors', async () => {
    const atftpGet = (name: string) =>
      run('atftp', ['-g', '-r', name, '-l', join(out, 'x.bin'), '127.0.0.1', String(server.port)]).then(
        () => 'ok',
        (e: { stderr?: string; stdout?: string }) => `${e.stderr ?? ''}${e.stdout ?? ''}`,
      );
    expect(await atftpGet('../secret.txt')).toMatch(/outside the boot folder/);
    expect(await atftpGet('efi/../../secret.txt')).toMatch(/outside the boot folder/);
    expect(await atftpGet('escape.txt')).toMatch(/leads outside the boot folder/);
    expect(await atftpGet('/etc/passwd')).toMatch(/not found/); // "/" is the boot folder, not the host's root
    expect(await atftpGet('\\efi\\snponly.efi')).toBe('ok'); // Windows-style names from some ROMs
    const up = await run('curl', [
      '-s',
      '-S',
      '-T',
      join(root, 'exact.bin'),
      `tftp://127.0.0.1:${server.port}/new.bin`,
    ]).then(
      () => 'ok',
      (e: { stderr?: string }) => e.stderr ?? '',
    );
    expect(up).not.toBe('ok');
    expect(events.some((e) => e.type === 'error' && e.reason === 'this server is read-only')).toBe(true);
  });
});

const optionsArb = fc.dictionary(
  fc.stringMatching(/^[a-z][a-z0-9]{0,9}$/),
  fc.stringMatching(/^[0-9a-z]{0,8}$/),
  { maxKeys: 5 },
);
const packetArb: fc.Arbitrary<TftpPacket> = fc.oneof(
  fc.record({
    op: fc.constantFrom(1 as const, 2 as const),
    filename: fc.stringMatching(/^[a-zA-Z0-9./_-]{1,40}$/),
    mode: fc.constantFrom('octet', 'netascii'),
    options: optionsArb,
  }),
  fc.record({ op: fc.constant(3 as const), block: fc.nat(0xffff), data: fc.uint8Array({ maxLength: 1500 }) }),
  fc.record({ op: fc.constant(4 as const), block: fc.nat(0xffff) }),
  fc.record({ op: fc.constant(5 as const), code: fc.nat(8), message: fc.stringMatching(/^[ -~]{0,40}$/) }),
  fc.record({ op: fc.constant(6 as const), options: optionsArb }),
);

describe('TFTP codec', () => {
  it('decode(encode(p)) = p', () => {
    fc.assert(
      fc.property(packetArb, (p) => {
        expect(decodeTftp(encodeTftp(p))).toEqual(p);
      }),
      { numRuns: 1000 },
    );
  });

  it('an RRQ as RFC 2347 lays it out', () => {
    const bytes = Buffer.from('\x00\x01pxelinux.0\x00octet\x00blksize\x001428\x00tsize\x000\x00', 'latin1');
    expect(decodeTftp(bytes)).toEqual({
      op: OP.RRQ,
      filename: 'pxelinux.0',
      mode: 'octet',
      options: { blksize: '1428', tsize: '0' },
    });
    expect(encodeTftp(decodeTftp(bytes))).toEqual(bytes);
  });

  it('fuzz: anything gives a packet or TftpDecodeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.nat(6), (u, op) => {
        const b = Buffer.from(u);
        if (b.length >= 2) b.writeUInt16BE(op, 0);
        try {
          decodeTftp(b);
        } catch (e) {
          if (!(e instanceof TftpDecodeError)) throw e;
        }
      }),
      { numRuns: 5000 },
    );
  });
});
