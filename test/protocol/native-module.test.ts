/**
 * Recognising a native package that cannot be loaded, from the errors Node itself throws: real
 * packages in a temporary node_modules whose addon is missing or is not a shared object, a
 * package that is not installed, and what `bindings` throws for an unbuilt addon. Anything else
 * is left alone.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CardlinkError, exitCodeFor } from '../../protocol/errors.js';
import { nativeModuleFailure, NativeModuleUnavailableError } from '../../protocol/native-module.js';

/** The error `load` throws (the test fails when it throws none). */
async function errorOf(load: () => unknown): Promise<Error> {
  try {
    await load();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail('expected the load to fail');
}

describe('nativeModuleFailure', () => {
  let dir: string;
  let requireHere: NodeJS.Require;

  /** A package in dir/node_modules with `files` (relative path -> content). */
  async function fakePackage(name: string, files: Record<string, string>): Promise<void> {
    const root = path.join(dir, 'node_modules', name);
    for (const [file, content] of Object.entries({
      'package.json': JSON.stringify({ name, main: 'index.js' }),
      ...files,
    })) {
      await mkdir(path.dirname(path.join(root, file)), { recursive: true });
      await writeFile(path.join(root, file), content);
    }
  }

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-native-'));
    requireHere = createRequire(path.join(dir, 'entry.js'));
    // pkcs11js as it loads its addon, never built: MODULE_NOT_FOUND for the .node file.
    await fakePackage('pkcs11js', { 'index.js': "module.exports = require('./build/Release/pkcs11.node');" });
    // better-sqlite3 with an addon that is not a shared object: ERR_DLOPEN_FAILED.
    await fakePackage('better-sqlite3', {
      'index.js': "module.exports = require('./build/Release/better_sqlite3.node');",
      'build/Release/better_sqlite3.node': 'not an ELF file',
    });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an addon that was never built (MODULE_NOT_FOUND for its .node file)', async () => {
    const error = await errorOf(() => requireHere('pkcs11js'));
    assert.equal((error as NodeJS.ErrnoException).code, 'MODULE_NOT_FOUND');
    const failure = nativeModuleFailure(error);
    assert.ok(failure instanceof NativeModuleUnavailableError);
    assert.equal(failure.packageName, 'pkcs11js');
    assert.equal(failure.code, 'ERR_NATIVE_MODULE_UNAVAILABLE');
    assert.deepEqual(failure.context, { package: 'pkcs11js' });
    assert.match(failure.message, /"pkcs11js".*cannot be loaded.*npm rebuild pkcs11js/);
    assert.equal(failure.cause, error);
    assert.equal(exitCodeFor(failure.code), 69);
  });

  it('an addon that is not a loadable shared object (ERR_DLOPEN_FAILED)', async () => {
    const error = await errorOf(() => requireHere('better-sqlite3'));
    assert.equal((error as NodeJS.ErrnoException).code, 'ERR_DLOPEN_FAILED');
    assert.equal(nativeModuleFailure(error)?.packageName, 'better-sqlite3');
  });

  it('a package that is not installed, imported or required', async () => {
    const imported = await errorOf(() =>
      import(pathToFileURL(path.join(dir, 'x.mjs')).href).then(() => undefined),
    );
    assert.equal(nativeModuleFailure(imported), undefined, 'a missing file of ours is not a native module');
    await writeFile(path.join(dir, 'importer.mjs'), "import 'pcsclite';\n");
    const missing = await errorOf(() => import(pathToFileURL(path.join(dir, 'importer.mjs')).href));
    assert.equal((missing as NodeJS.ErrnoException).code, 'ERR_MODULE_NOT_FOUND');
    assert.equal(nativeModuleFailure(missing)?.packageName, 'pcsclite');
    const keyring = await errorOf(() => requireHere('@napi-rs/keyring-linux-x64-gnu'));
    assert.equal(nativeModuleFailure(keyring)?.packageName, '@napi-rs/keyring');
  });

  it("what `bindings` throws for an addon it cannot find, also as another error's cause", () => {
    const bindings = new Error(
      'Could not locate the bindings file. Tried:\n → /opt/cardlink/node_modules/pcsclite/build/pcsclite.node\n → /opt/cardlink/node_modules/pcsclite/build/Release/pcsclite.node',
    );
    const failure = nativeModuleFailure(bindings);
    assert.equal(failure?.packageName, 'pcsclite');
    assert.match(
      failure.message,
      /\(Could not locate the bindings file\. Tried: → \/opt\/cardlink\/node_modules\/pcsclite\/build\/pcsclite\.node\)/,
    );
    const wrapped = new CardlinkError('ERR_STORAGE', 'cannot open the database', {}, { cause: bindings });
    assert.equal(nativeModuleFailure(wrapped)?.packageName, 'pcsclite');
  });

  it('leaves every other error alone', async () => {
    const notNative = await errorOf(() => requireHere('left-pad-not-installed'));
    assert.equal(nativeModuleFailure(notNative), undefined);
    assert.equal(
      nativeModuleFailure(new TypeError("Cannot read properties of undefined (reading 'x')")),
      undefined,
    );
    // A runtime error that merely mentions a native package's path is not a load failure.
    assert.equal(
      nativeModuleFailure(new Error('SCardTransmit failed at /x/node_modules/pcsclite/lib/pcsclite.js')),
      undefined,
    );
    assert.equal(nativeModuleFailure('a string'), undefined);
    assert.equal(nativeModuleFailure(undefined), undefined);
  });
});
