/**
 * Reading secrets (PIN, PUK) for `cardlink pin`, and a PKCS#12 password for `cardlink admin
 * import-p12`: from the terminal without echo, or, when stdin is not a terminal, one per line from
 * stdin (for scripts: `printf '%s\n' "$OLD" "$NEW" | cardlink pin change`). Never from argv, where
 * other users of the machine see them (`ps`). Shared by the daemon's and the server's command
 * lines, hence in protocol/.
 *
 * The values are JavaScript strings: they cannot be wiped, so they are kept no longer than the
 * request that carries them to the daemon.
 */
import { CardlinkError } from './errors.js';

/** Longest line read from stdin, in bytes: far above a PIN (8 bytes) or a password, it bounds what is held. */
export const MAX_SECRET_LINE_BYTES = 256;

export interface SecretInput {
  readonly input: NodeJS.ReadStream;
  /** Where prompts go (the terminal's stderr: stdout stays for the answer). */
  readonly prompts: NodeJS.WritableStream;
}

/** Reads one secret per prompt (see the file comment); ERR_USAGE when stdin ends first. */
export function readSecrets(prompts: readonly string[], io: SecretInput): Promise<string[]> {
  return io.input.isTTY ? readFromTerminal(prompts, io) : readLines(prompts, io.input);
}

function usage(message: string): CardlinkError {
  return new CardlinkError('ERR_USAGE', message);
}

/** One line per secret from a pipe or file; CR before LF and a missing last LF are accepted. */
function readLines(prompts: readonly string[], input: NodeJS.ReadableStream): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const lines: string[] = [];
    const finish = (error?: CardlinkError) => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.pause();
      pending.fill(0);
      if (error) reject(error);
      else resolve(lines);
    };
    const take = (line: Buffer) => {
      const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length;
      lines.push(line.subarray(0, end).toString('utf8'));
      line.fill(0);
    };
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      chunk.fill(0);
      let nl: number;
      while (lines.length < prompts.length && (nl = pending.indexOf(0x0a)) !== -1) {
        if (nl > MAX_SECRET_LINE_BYTES)
          return finish(usage(`a line on stdin is longer than ${MAX_SECRET_LINE_BYTES} bytes`));
        take(Buffer.from(pending.subarray(0, nl)));
        pending = pending.subarray(nl + 1);
      }
      if (lines.length === prompts.length) return finish();
      if (pending.length > MAX_SECRET_LINE_BYTES)
        finish(usage(`a line on stdin is longer than ${MAX_SECRET_LINE_BYTES} bytes`));
    };
    const onEnd = () => {
      if (pending.length > 0 && lines.length < prompts.length) take(Buffer.from(pending));
      if (lines.length === prompts.length) finish();
      else
        finish(
          usage(
            `stdin ended after ${lines.length} of ${prompts.length} lines (${prompts.join(', ')}; one per line)`,
          ),
        );
    };
    const onError = () => finish(usage('stdin could not be read'));
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    input.resume();
  });
}

/**
 * Each prompt on the terminal, each answer typed without echo. The terminal stays in raw mode from
 * the first prompt to the last answer, so what is typed ahead of a prompt is not echoed either:
 * Enter ends an answer, Backspace deletes, Ctrl-C and Ctrl-D stop (ERR_USAGE).
 */
function readFromTerminal(prompts: readonly string[], io: SecretInput): Promise<string[]> {
  const { input } = io;
  return new Promise((resolve, reject) => {
    const answers: string[] = [];
    let typed = '';
    /** The last character was CR: an LF right after it (a pasted CR LF) ends nothing. */
    let afterCr = false;
    const done = (error?: CardlinkError) => {
      input.removeListener('data', onData);
      input.setRawMode(false);
      input.pause();
      if (error) {
        io.prompts.write('\n');
        reject(error);
      } else resolve(answers);
    };
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      chunk.fill(0);
      for (const ch of text) {
        const lfAfterCr = afterCr && ch === '\n';
        afterCr = ch === '\r';
        if (lfAfterCr) continue;
        if (ch === '\r' || ch === '\n') {
          answers.push(typed);
          typed = '';
          io.prompts.write('\n');
          if (answers.length === prompts.length) return done();
          io.prompts.write(prompts[answers.length]!);
        } else if (ch === '\u0003') return done(usage('cancelled'));
        else if (ch === '\u0004') return done(usage('cancelled (end of input)'));
        else if (ch === '\u007f' || ch === '\b') typed = [...typed].slice(0, -1).join('');
        else if (ch >= ' ') typed += ch;
        if (Buffer.byteLength(typed) > MAX_SECRET_LINE_BYTES) return done(usage('input too long'));
      }
    };
    input.setRawMode(true);
    io.prompts.write(prompts[0]!);
    input.on('data', onData);
    input.resume();
  });
}
