/**
 * The web UI's files: index.html, app.css and app.js — the preact + htm code of rescue/ui bundled
 * by esbuild into one file the first time it is asked for (about 50 ms), then kept in memory; the
 * single binary carries them prebuilt.
 * Nothing is loaded from the internet: preact and htm come from node_modules into the bundle.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export interface UiAssets {
  html: string;
  css: string;
  js: string;
}

let cached: Promise<UiAssets> | undefined;

async function build(): Promise<UiAssets> {
  // The single binary carries the files prebuilt (build/sea.ts) as SEA assets.
  const sea = await import('node:sea').catch(() => undefined);
  if (sea?.isSea()) {
    return {
      html: sea.getAsset('ui/index.html', 'utf8'),
      css: sea.getAsset('ui/app.css', 'utf8'),
      js: sea.getAsset('ui/app.js', 'utf8'),
    };
  }
  const UI_DIR = fileURLToPath(new URL('../ui/', import.meta.url));
  const { build: esbuild } = await import('esbuild');
  const out = await esbuild({
    entryPoints: [`${UI_DIR}main.ts`],
    bundle: true,
    write: false,
    format: 'esm',
    target: 'es2022',
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'silent',
  });
  return {
    html: await readFile(`${UI_DIR}index.html`, 'utf8'),
    css: await readFile(`${UI_DIR}app.css`, 'utf8'),
    js: out.outputFiles[0].text,
  };
}

export function uiAssets(): Promise<UiAssets> {
  cached ??= build().catch((e) => {
    cached = undefined;
    throw e;
  });
  return cached;
}
