/**
 * ffi-rs, the one native add-on: from node_modules in a checkout; beside the single binary
 * (`rescue-lib/node_modules`, copied there by build/sea.ts) when running as one, where require()
 * only knows Node's own modules. Callers fall back when it cannot be loaded.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

type FfiRs = typeof import('ffi-rs');

let loading: Promise<FfiRs> | undefined;

async function load(): Promise<FfiRs> {
  try {
    const mod = (await import('ffi-rs')) as FfiRs & { default?: FfiRs };
    return mod.default ?? mod;
  } catch (first) {
    const sea = await import('node:sea').catch(() => undefined);
    if (!sea?.isSea()) throw first;
    const beside = createRequire(join(dirname(process.execPath), 'rescue-lib', 'loader.cjs'));
    return beside('ffi-rs') as FfiRs;
  }
}

export function loadFfiRs(): Promise<FfiRs> {
  loading ??= load();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}
