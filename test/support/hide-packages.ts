/**
 * Runs a program as if some npm packages were not there, without touching node_modules:
 *
 *   node --import ./dist/test/support/hide-packages.js dist/bin/main.js ...
 *   with TEST_HIDE_NPM_PACKAGES=pcsclite:missing,pkcs11js:unbuilt
 *
 * `missing`: importing the package fails as Node fails for a package that is not installed
 * (ERR_MODULE_NOT_FOUND, "Cannot find package 'pcsclite' imported from ..."). `unbuilt`: the
 * package is found but its native addon was never built, and it throws what the `bindings` package
 * throws then ("Could not locate the bindings file. Tried: → .../node_modules/<pkg>/build/...").
 * Hooks: hide-packages-hooks.ts (they run on Node's loader thread).
 */
import { register } from 'node:module';

/** `name:mode` pairs, comma-separated. */
// Not CARDLINK_*: `cardlink local-card` reads CARDLINK_* variables as its options.
export const HIDE_PACKAGES_ENV = 'TEST_HIDE_NPM_PACKAGES';

export type HideMode = 'missing' | 'unbuilt';

/** The value of HIDE_PACKAGES_ENV for `packages`. */
export function hidePackagesValue(packages: Record<string, HideMode>): string {
  return Object.entries(packages)
    .map(([name, mode]) => `${name}:${mode}`)
    .join(',');
}

const spec = process.env[HIDE_PACKAGES_ENV];
if (spec) {
  const hidden: Record<string, HideMode> = {};
  for (const pair of spec.split(',')) {
    const [name, mode] = pair.split(':');
    if (!name || (mode !== 'missing' && mode !== 'unbuilt'))
      throw new Error(`${HIDE_PACKAGES_ENV}: "${pair}" is not <package>:missing or <package>:unbuilt`);
    hidden[name] = mode;
  }
  register(new URL('./hide-packages-hooks.js', import.meta.url), { data: hidden });
}
