/**
 * How the `cardlink` command reports a failure: on stderr, with an exit status per error code
 * (`exitCodeFor`), and no stack trace unless CARDLINK_DEBUG=1.
 *
 * - Plain: `cardlink: <message> [<code>]` (usage errors: the message and a pointer to --help).
 * - With `--json` on the command line (whichever command, and also when the command does not take
 *   it: the usage error then says so): one JSON line,
 *   `{"error":{"code":"ERR_…","message":"…","context":{…}}}`. Results stay on stdout, errors on
 *   stderr, in both modes. docs/cli.md.
 *
 * An error that is not a CardlinkError is a native module that cannot be loaded
 * (ERR_NATIVE_MODULE_UNAVAILABLE, named with its fix) or else unexpected (ERR_INTERNAL, exit 1).
 */
import { escapeControlCharacters } from '../protocol/control-characters.js';
import { CardlinkError, exitCodeFor } from '../protocol/errors.js';
import { nativeModuleFailure } from '../protocol/native-module.js';

/**
 * Whether the command line asks for JSON: the last of `--json`, `--json=true|false`,
 * `--json true|false` and `--no-json` before a `--` wins, as yargs reads it.
 */
export function jsonRequested(argv: readonly string[]): boolean {
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--json') {
      const next = argv[i + 1];
      json = next !== 'false';
      if (next === 'true' || next === 'false') i++;
    } else if (a === '--json=true') json = true;
    else if (a === '--json=false' || a === '--no-json') json = false;
  }
  return json;
}

/** A usage error of the command line (unknown option, missing command, failed check). */
export function usageError(message: string): CardlinkError {
  return new CardlinkError('ERR_USAGE', message);
}

/** Characters JSON.stringify leaves raw that a terminal or a line reader must not see. */
const RAW_IN_JSON = /[\u007f-\u009f\u2028\u2029]/g;

/** The error line in JSON; control characters stay JSON escapes, so the data is not altered. */
function jsonLine(error: CardlinkError): string {
  const body = {
    error: {
      code: error.code,
      message: error.message,
      ...(Object.keys(error.context).length ? { context: error.context } : {}),
    },
  };
  return JSON.stringify(body).replace(
    RAW_IN_JSON,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Prints `err` as this module describes and exits with its status. */
export function reportAndExit(err: unknown, options: { json: boolean }): never {
  let error: CardlinkError;
  let unexpected = false;
  if (err instanceof CardlinkError) error = err;
  else {
    const native = nativeModuleFailure(err);
    if (native) error = native;
    else {
      unexpected = true;
      const message = err instanceof Error ? err.message : String(err);
      error = new CardlinkError('ERR_INTERNAL', `unexpected error: ${message}`);
    }
  }
  if (options.json) process.stderr.write(`${jsonLine(error)}\n`);
  else if (error.code === 'ERR_USAGE')
    process.stderr.write(
      `cardlink: ${escapeControlCharacters(error.message)}\nRun 'cardlink --help' for usage.\n`,
    );
  else if (unexpected) process.stderr.write(`cardlink: ${escapeControlCharacters(error.message)}\n`);
  else process.stderr.write(`cardlink: ${escapeControlCharacters(error.message)} [${error.code}]\n`);
  if (process.env['CARDLINK_DEBUG'] === '1' && err instanceof Error && err.stack)
    process.stderr.write(`${err.stack}\n`);
  process.exit(unexpected ? 1 : exitCodeFor(error.code));
}
