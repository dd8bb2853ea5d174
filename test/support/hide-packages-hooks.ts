/**
 * Module hooks of hide-packages.ts: a hidden package cannot be resolved (`missing`) or resolves to
 * a module that fails as an unbuilt native package fails (`unbuilt`). Everything else resolves as
 * usual. The package's own files stay untouched.
 */
import type { LoadHook, ResolveHook } from 'node:module';
import { fileURLToPath } from 'node:url';

type HideMode = 'missing' | 'unbuilt';

/** Where an `unbuilt` package resolves to; the load hook answers for it. */
const UNBUILT_SCHEME = 'cardlink-unbuilt:';

let hidden: Record<string, HideMode> = {};

export function initialize(data: Record<string, HideMode>): void {
  hidden = data;
}

function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

export const resolve: ResolveHook = async (specifier, context, nextResolve) => {
  const name = packageOf(specifier);
  const mode = specifier.startsWith('.') || specifier.includes(':') ? undefined : hidden[name];
  if (mode === 'missing') {
    const parent = context.parentURL?.startsWith('file:')
      ? fileURLToPath(context.parentURL)
      : context.parentURL;
    // The error Node gives for a package that is not installed.
    throw Object.assign(new Error(`Cannot find package '${name}' imported from ${parent}`), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
  }
  if (mode === 'unbuilt') {
    const real = await nextResolve(specifier, context);
    return { url: `${UNBUILT_SCHEME}${encodeURIComponent(real.url)}`, format: 'module', shortCircuit: true };
  }
  return nextResolve(specifier, context);
};

export const load: LoadHook = async (url, context, nextLoad) => {
  if (!url.startsWith(UNBUILT_SCHEME)) return nextLoad(url, context);
  const entry = fileURLToPath(decodeURIComponent(url.slice(UNBUILT_SCHEME.length)));
  const root = entry.slice(0, entry.lastIndexOf('/node_modules/') + '/node_modules/'.length);
  const name = Object.keys(hidden).find((n) => entry.startsWith(`${root}${n}/`)) ?? 'unknown';
  // What the `bindings` package throws when no build of the addon exists.
  const message =
    `Could not locate the bindings file. Tried:\n` +
    ` → ${root}${name}/build/${name}.node\n` +
    ` → ${root}${name}/build/Release/${name}.node`;
  // The default export only lets the importer link; evaluating the module throws.
  const source = `throw new Error(${JSON.stringify(message)});\nexport default undefined;\n`;
  return { format: 'module', source, shortCircuit: true };
};
