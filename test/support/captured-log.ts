/**
 * A real cardlink logger (protocol/log.ts: escaping, redaction, JSON lines) whose lines a test
 * reads back instead of finding them on stderr.
 */
import { Writable } from 'node:stream';
import winston from 'winston';
import { createLogger, type Logger, type LogLevel } from '../../protocol/log.js';

export interface CapturedLog {
  readonly logger: Logger;
  /** Every line written so far, parsed. */
  readonly lines: Record<string, unknown>[];
  /** Every line written so far, as written (for searching for secrets). */
  raw(): string;
}

export function capturedLogger(component = 'test', level: LogLevel = 'debug'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  let pending = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      pending += chunk.toString();
      let at: number;
      while ((at = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 1);
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const logger = createLogger({ component, level }, [new winston.transports.Stream({ stream })]);
  return { logger, lines, raw: () => lines.map((l) => JSON.stringify(l)).join('\n') };
}
