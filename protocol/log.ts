/**
 * The one log format of cardlink: winston, JSON lines.
 *
 * Two rules hold for every line, whoever logs it:
 * - control characters in any string are escaped, so a log line can never be split or
 *   forged by data that came from a card, a token or a peer;
 * - fields whose names say they hold a secret are replaced by "[redacted]" (defence in depth:
 *   callers must not log secrets in the first place).
 */
import winston from 'winston';
import { escapeControlCharacters } from './control-characters.js';

export { escapeControlCharacters };

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type Logger = winston.Logger;

/** Field names never written out, matched case-insensitively as whole words or suffixes. */
const SECRET_FIELD =
  /(^|_|-)(pin|puk|password|secret|token|accesstoken|refreshtoken|privatekey|mgmtkey|managementkey|key)$/i;

function sanitize(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return escapeControlCharacters(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (value instanceof Uint8Array) return `[${value.length} bytes]`;
  if (value instanceof Error) return { name: value.name, message: escapeControlCharacters(value.message) };
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value))
    out[k] = SECRET_FIELD.test(k) ? '[redacted]' : sanitize(v, depth + 1);
  return out;
}

const sanitizeFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    const v = info[key];
    info[key] = SECRET_FIELD.test(key) ? '[redacted]' : sanitize(v);
  }
  return info;
});

export interface LoggerOptions {
  level?: LogLevel;
  /** Component name written on every line (`daemon`, `server`, `local-card`). */
  component: string;
  /** Log file; when absent lines go to stderr. */
  file?: string;
  /** Rotation for `file`: largest size in bytes and number of files kept. */
  maxSize?: number;
  maxFiles?: number;
}

/**
 * A logger writing the cardlink format. `transports`, when given, replace the default destination
 * (`options.file`, else stderr) and get the same formatting (escaping, redaction, JSON lines).
 */
export function createLogger(options: LoggerOptions, transports?: readonly winston.transport[]): Logger {
  const destinations = transports
    ? [...transports]
    : [
        options.file
          ? new winston.transports.File({
              filename: options.file,
              maxsize: options.maxSize ?? 10 * 1024 * 1024,
              maxFiles: options.maxFiles ?? 5,
              tailable: true,
            })
          : new winston.transports.Stream({ stream: process.stderr }),
      ];
  return winston.createLogger({
    level: options.level ?? 'info',
    defaultMeta: { component: options.component },
    format: winston.format.combine(sanitizeFormat(), winston.format.timestamp(), winston.format.json()),
    transports: destinations,
  });
}
