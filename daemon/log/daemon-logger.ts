/**
 * The daemon's logger: the cardlink log format of `protocol/log.ts` (JSON lines, control
 * characters escaped, secret-named fields redacted), written to a rotated private file and/or
 * stderr.
 *
 * The log file can hold APDU traces at debug level (see `apdu-trace.ts`: secrets are masked there)
 * and card, reader and server names, so it is created readable by its owner only (0600) in a
 * directory created for the owner only (0700).
 */
import fs from 'node:fs';
import path from 'node:path';
import winston from 'winston';
import { createLogger, type Logger, type LogLevel } from '../../protocol/log.js';

/** Component name written on every daemon line. */
export const DAEMON_LOG_COMPONENT = 'daemon';
/** Largest log file before it is rotated, by default: 10 MiB. */
export const DEFAULT_LOG_MAX_SIZE_BYTES = 10 * 1024 * 1024;
/** Number of log files kept (the current one and its rotated predecessors), by default. */
export const DEFAULT_LOG_MAX_FILES = 5;
/** Mode of the log file and of the files rotated from it: owner read/write only. */
export const LOG_FILE_MODE = 0o600;
/** Mode of a log directory the daemon creates: owner only. */
export const LOG_DIR_MODE = 0o700;

export interface DaemonLoggerOptions {
  level: LogLevel;
  /** Log file. Rotated to `<name>1<ext>`, `<name>2<ext>`, ... (the newest rotated file is 1). */
  file?: string;
  /** Size in bytes past which `file` is rotated; default DEFAULT_LOG_MAX_SIZE_BYTES. */
  maxSizeBytes?: number;
  /** Files kept, the current one included; default DEFAULT_LOG_MAX_FILES. At least 2. */
  maxFiles?: number;
  /** Also write to stderr. Default: true without `file`, false with it. */
  console?: boolean;
}

/**
 * Prepares `file` for the File transport: its directory is created 0700 when missing (existing
 * directories are left as they are) and the file itself, when it already exists, is narrowed to
 * 0600. New files are created 0600 by the transport.
 */
function prepareLogFile(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: LOG_DIR_MODE });
  try {
    fs.chmodSync(file, LOG_FILE_MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function positiveInteger(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min)
    throw new RangeError(`${name} must be an integer of at least ${min}`);
  return value;
}

export function createDaemonLogger(options: DaemonLoggerOptions): Logger {
  const transports: winston.transport[] = [];
  if (options.file !== undefined) {
    const file = path.resolve(options.file);
    const maxsize = positiveInteger('maxSizeBytes', options.maxSizeBytes ?? DEFAULT_LOG_MAX_SIZE_BYTES, 1);
    // Tailable rotation keeps `maxFiles` files in all; with 1 it would still keep two.
    const maxFiles = positiveInteger('maxFiles', options.maxFiles ?? DEFAULT_LOG_MAX_FILES, 2);
    prepareLogFile(file);
    transports.push(
      new winston.transports.File({
        filename: file,
        maxsize,
        maxFiles,
        tailable: true,
        // Passed to fs.createWriteStream for every file the transport opens.
        options: { flags: 'a', mode: LOG_FILE_MODE },
      }),
    );
  }
  if (options.console ?? options.file === undefined)
    transports.push(new winston.transports.Stream({ stream: process.stderr }));
  // No destination at all: a silent transport keeps winston from warning on every line.
  if (transports.length === 0)
    transports.push(new winston.transports.Stream({ stream: process.stderr, silent: true }));
  return createLogger({ component: DAEMON_LOG_COMPONENT, level: options.level }, transports);
}

/** Longest closeDaemonLogger waits for queued lines and a running rotation before ending. */
export const LOG_CLOSE_DRAIN_TIMEOUT_MS = 5000;
/** How often closeDaemonLogger looks whether the logger has become idle. */
const LOG_CLOSE_POLL_MS = 5;

/**
 * The parts of winston's File transport (3.x) that tell whether it is idle. They are private to
 * winston; when they are missing (another winston version) they simply count as idle.
 */
interface FileTransportState {
  _rotate?: boolean;
  _opening?: boolean;
  _stream?: { readableLength?: number; writableLength?: number };
  _dest?: { writableLength?: number };
}

function fileTransportIdle(t: winston.transport): boolean {
  const s = t as unknown as FileTransportState;
  return (
    t.writableLength === 0 &&
    s._rotate !== true &&
    s._opening !== true &&
    (s._stream?.readableLength ?? 0) === 0 &&
    (s._stream?.writableLength ?? 0) === 0 &&
    (s._dest?.writableLength ?? 0) === 0
  );
}

/**
 * Ends `logger` and resolves once every line logged before has reached its file (the File
 * transports have flushed and closed). Use on shutdown and in tests before reading the file.
 *
 * winston ends its transports as soon as the logger itself has ended: lines still queued in the
 * logger (a File transport pushes back while it rotates) would then be written after the end and
 * fail, and a File transport ended in the middle of a rotation reports "finish" before the lines
 * it holds for the next file are written. So the logger is ended only once it is idle: nothing
 * queued and no rotation running (or LOG_CLOSE_DRAIN_TIMEOUT_MS has passed).
 */
export async function closeDaemonLogger(logger: Logger): Promise<void> {
  const files = logger.transports.filter((t) => t instanceof winston.transports.File);
  const deadline = Date.now() + LOG_CLOSE_DRAIN_TIMEOUT_MS;
  while ((logger.readableLength > 0 || !files.every(fileTransportIdle)) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, LOG_CLOSE_POLL_MS));
  const flushed = files.map(
    (t) =>
      new Promise<void>((resolve) => {
        t.once('finish', () => resolve());
        t.once('error', () => resolve());
      }),
  );
  logger.end();
  await Promise.all(flushed);
}
