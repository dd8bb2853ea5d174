/**
 * The compiled (native) npm packages cardlink uses, and how a failure to load one becomes an error
 * that names the package and the fix instead of a stack trace.
 *
 * Each command loads only the modules it needs (bin/main.ts), so a missing or unbuilt package
 * stops only the commands that use it: `cardlink server` and `cardlink admin` never load pcsclite,
 * the daemon never loads pkcs11js or better-sqlite3. When one of them does fail, the error that
 * reaches the CLI is Node's (`ERR_MODULE_NOT_FOUND`, `ERR_DLOPEN_FAILED`, the `bindings` package's
 * "Could not locate the bindings file"); `nativeModuleFailure` recognises those and names the
 * package. Nothing else is recognised: any other error stays what it was.
 */
import { CardlinkError } from './errors.js';

interface NativePackage {
  /** What cardlink needs it for, in the words of the error message. */
  readonly neededFor: string;
  /** What to run to get it working. */
  readonly fix: string;
}

/** Every native package in package.json's dependencies. */
export const NATIVE_PACKAGES = {
  pcsclite: {
    neededFor: 'talking to pcscd (cardlink local-card)',
    fix:
      'run "npm rebuild pcsclite" in the cardlink checkout; it builds against libpcsclite-dev with ' +
      'pkg-config, make, g++ and python3 (install-scripts/debian/setup.sh installs them)',
  },
  'better-sqlite3': {
    neededFor: 'SQLite databases (cardlink server, cardlink admin)',
    fix:
      'run "npm rebuild better-sqlite3" in the cardlink checkout; without a prebuilt binary for this ' +
      'Node.js it builds one with make, g++ and python3',
  },
  pkcs11js: {
    neededFor: 'PKCS#11 key providers (cardlink server, cardlink admin)',
    fix: 'run "npm rebuild pkcs11js" in the cardlink checkout; it builds with make, g++ and python3',
  },
  '@napi-rs/keyring': {
    neededFor: 'the desktop keyring (cardlink daemon)',
    fix:
      'run "npm ci" in the cardlink checkout: the prebuilt binary for this platform (an optional ' +
      'dependency of @napi-rs/keyring) is missing',
  },
} as const satisfies Record<string, NativePackage>;

export type NativePackageName = keyof typeof NATIVE_PACKAGES;

/** Longest part of the original error kept in the message (its first line: a path, a reason). */
const MAX_REASON_CHARS = 300;

/** How deep `nativeModuleFailure` follows `cause` chains. */
const MAX_CAUSE_DEPTH = 5;

/** Codes Node gives a module that cannot be found or a shared object that cannot be opened. */
const LOAD_FAILURE_CODES = new Set(['ERR_MODULE_NOT_FOUND', 'MODULE_NOT_FOUND', 'ERR_DLOPEN_FAILED']);

/**
 * Messages of a native addon that exists but does not load: `bindings` found no build, or the
 * build is for another Node.js (ABI) or architecture.
 */
const LOAD_FAILURE_MESSAGE =
  /Could not locate the bindings file|NODE_MODULE_VERSION|was compiled against a different Node\.js version|Module did not self-register|invalid ELF header|cannot open shared object file|wrong ELF class/;

/** The first line of `message` (and the next when the first announces it, as "Tried:" does). */
function reasonOf(message: string): string {
  const [first = '', second = ''] = message.split('\n').map((l) => l.trim());
  return (first.endsWith(':') && second ? `${first} ${second}` : first).slice(0, MAX_REASON_CHARS);
}

/** A native package that cardlink needs here cannot be loaded. */
export class NativeModuleUnavailableError extends CardlinkError {
  readonly packageName: NativePackageName;

  constructor(packageName: NativePackageName, cause: Error) {
    const reason = reasonOf(cause.message);
    const pkg = NATIVE_PACKAGES[packageName];
    super(
      'ERR_NATIVE_MODULE_UNAVAILABLE',
      `the native module "${packageName}", needed for ${pkg.neededFor}, cannot be loaded` +
        `${reason ? ` (${reason})` : ''}. To fix it, ${pkg.fix}`,
      { package: packageName },
      { cause },
    );
    this.name = 'NativeModuleUnavailableError';
    this.packageName = packageName;
  }
}

function nativePackageOf(specifier: string): NativePackageName | undefined {
  for (const name of Object.keys(NATIVE_PACKAGES) as NativePackageName[]) {
    // @napi-rs/keyring's binary comes in a package of its own per platform (@napi-rs/keyring-linux-x64-gnu).
    if (specifier === name || specifier.startsWith(`${name}/`) || specifier.startsWith(`${name}-`))
      return name;
  }
  return undefined;
}

/** The native package whose loading failed with `error`, if that is what `error` is. */
function failedPackage(error: Error): NativePackageName | undefined {
  const code = (error as NodeJS.ErrnoException).code;
  const text = error.message;
  if (!(code !== undefined && LOAD_FAILURE_CODES.has(code)) && !LOAD_FAILURE_MESSAGE.test(text))
    return undefined;
  // "Cannot find package 'pcsclite' imported from ..." / "Cannot find module '@napi-rs/keyring-linux-x64-gnu'"
  const named = /Cannot find (?:package|module) '([^']+)'/.exec(text)?.[1];
  if (named !== undefined) {
    const pkg = nativePackageOf(named);
    if (pkg) return pkg;
  }
  // A path into the package: its addon ("/.../node_modules/pkcs11js/build/Release/pkcs11.node"),
  // the places `bindings` tried, or the package's file that required a missing module.
  for (const m of text.matchAll(/node_modules\/((?:@[^/\s'"]+\/)?[^/\s'"]+)\//g)) {
    const pkg = nativePackageOf(m[1]!);
    if (pkg) return pkg;
  }
  return undefined;
}

/**
 * `error` (or an error in its `cause` chain) as a NativeModuleUnavailableError when it is a
 * failure to load one of NATIVE_PACKAGES; undefined for anything else.
 */
export function nativeModuleFailure(error: unknown): NativeModuleUnavailableError | undefined {
  let e: unknown = error;
  for (let depth = 0; e instanceof Error && depth < MAX_CAUSE_DEPTH; depth++, e = e.cause) {
    if (e instanceof NativeModuleUnavailableError) return e;
    const pkg = failedPackage(e);
    if (pkg) return new NativeModuleUnavailableError(pkg, e);
  }
  return undefined;
}
