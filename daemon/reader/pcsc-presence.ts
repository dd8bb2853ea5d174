/**
 * What pcscd itself reports, read through PC/SC (npm `pcsclite`): whether pcscd is reachable, and
 * waiting until a named reader holds (or no longer holds) a card.
 *
 * libpcsclite reads PCSCLITE_CSOCK_NAME (the pcscd socket) once per process, at the first context.
 */
import pcsclite from 'pcsclite';
import { CardlinkError } from '../../protocol/errors.js';

/** How long waitForCard waits unless told otherwise. */
export const CARD_WAIT_TIMEOUT_MS = 5000;

/**
 * How npm pcsclite words "no pcscd": SCARD_E_NO_SERVICE 0x8010001D (socket missing) and
 * SCARD_E_SERVICE_STOPPED 0x8010001E (pcsclite.h), e.g. "SCardEstablishContext error: Service not
 * available.(0x8010001d)".
 */
const PCSCD_GONE = /0x8010001d|0x8010001e|Service not available|service was stopped/i;

/** The message names the fix. */
export function pcscdUnavailableError(cause?: unknown): CardlinkError {
  return new CardlinkError(
    'ERR_PCSCD_UNAVAILABLE',
    'pcscd is not running or not reachable: install it (apt-get install pcscd) and start it (systemctl start pcscd.socket, or run pcscd)',
    { socket: process.env.PCSCLITE_CSOCK_NAME ?? '/run/pcscd/pcscd.comm' },
    { cause },
  );
}

/** Whether an error from npm pcsclite means "no pcscd" (SCARD_E_NO_SERVICE / SCARD_E_SERVICE_STOPPED). */
export function isPcscdUnavailable(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return PCSCD_GONE.test(message);
}

/**
 * How long closePcsc waits for a reader's first status before closing it anyway. npm pcsclite 1.0.1
 * leaks the reader's libuv handle (the process then never exits) when reader.close() runs before the
 * reader's status thread has entered its loop, i.e. before its first 'status' event.
 */
export const READER_CLOSE_FALLBACK_MS = 2000;

const closedContexts = new WeakSet<pcsclite.PCSCLite>();
const startedReaders = new WeakSet<pcsclite.CardReader>();
const closedReaders = new WeakSet<pcsclite.CardReader>();

function closeReader(reader: pcsclite.CardReader): void {
  if (closedReaders.has(reader)) return;
  closedReaders.add(reader);
  if (startedReaders.has(reader)) {
    setImmediate(() => reader.close());
    return;
  }
  // Not started yet: close right after its first status (see READER_CLOSE_FALLBACK_MS). On error its
  // thread ends by itself.
  const fallback = setTimeout(() => reader.close(), READER_CLOSE_FALLBACK_MS);
  reader.once('status', () => {
    clearTimeout(fallback);
    setImmediate(() => reader.close());
  });
  reader.once('error', () => clearTimeout(fallback));
}

/**
 * Opens a PC/SC context, mapping "no pcscd" to ERR_PCSCD_UNAVAILABLE. Close it with closePcsc().
 * The context and every reader it announces get an 'error' listener that ignores the error (npm
 * pcsclite emits 'error' for a vanished reader or a cancelled wait; unhandled, that would end the
 * process): callers who care add their own.
 */
export function openPcsc(): pcsclite.PCSCLite {
  let pcsc: pcsclite.PCSCLite;
  try {
    pcsc = pcsclite();
  } catch (err) {
    if (isPcscdUnavailable(err)) throw pcscdUnavailableError(err);
    throw err;
  }
  pcsc.on('error', () => undefined);
  pcsc.on('reader', (reader) => {
    reader.on('error', () => undefined);
    reader.once('status', () => startedReaders.add(reader));
    // announced after closePcsc() ran: its status thread would keep the process alive
    if (closedContexts.has(pcsc)) closeReader(reader);
  });
  return pcsc;
}

/**
 * Closes a context and every reader it announced (each runs a status thread). Deferred: npm
 * pcsclite starts its reader-list thread on the next tick and runs reader 'status' listeners holding
 * the reader's mutex, which reader.close() takes again (deadlock); and a reader is closed only once
 * its thread runs (see READER_CLOSE_FALLBACK_MS).
 */
export function closePcsc(pcsc: pcsclite.PCSCLite): void {
  if (closedContexts.has(pcsc)) return;
  closedContexts.add(pcsc);
  setImmediate(() => {
    for (const reader of Object.values(pcsc.readers)) closeReader(reader);
    pcsc.close();
  });
}

/** Throws ERR_PCSCD_UNAVAILABLE (with the fix in the message) unless pcscd answers. */
export function assertPcscdAvailable(): void {
  closePcsc(openPcsc());
}

export interface WaitForCardOptions {
  /** true: wait for a card; false: wait for an empty reader. */
  present: boolean;
  /** Overrides CARD_WAIT_TIMEOUT_MS. */
  timeoutMs?: number;
}

export interface CardState {
  /** The ATR when a card is present. */
  atr?: Buffer;
  /** SCARD_STATE_* bits as reported. */
  state: number;
}

/**
 * Resolves once pcscd reports reader `readerName` (e.g. "cardlink Virtual Reader 00 00") with a card
 * present (SCARD_STATE_PRESENT) or empty, as asked. Rejects with ERR_SLOT_UNAVAILABLE on timeout and
 * ERR_PCSCD_UNAVAILABLE when pcscd is not reachable.
 */
export function waitForCard(readerName: string, options: WaitForCardOptions): Promise<CardState> {
  const timeoutMs = options.timeoutMs ?? CARD_WAIT_TIMEOUT_MS;
  const pcsc = openPcsc();
  return new Promise<CardState>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | undefined, value?: CardState): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      closePcsc(pcsc);
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(
      () =>
        finish(
          new CardlinkError(
            'ERR_SLOT_UNAVAILABLE',
            `reader "${readerName}" did not become ${options.present ? 'occupied' : 'empty'} in time`,
            {
              reader: readerName,
              timeoutMs,
            },
          ),
        ),
      timeoutMs,
    );
    pcsc.on('error', (err) => finish(isPcscdUnavailable(err) ? pcscdUnavailableError(err) : err));
    pcsc.on('reader', (reader) => {
      if (reader.name !== readerName) return;
      reader.on('error', (err) => finish(isPcscdUnavailable(err) ? pcscdUnavailableError(err) : err));
      reader.on('status', (status) => {
        const present = (status.state & reader.SCARD_STATE_PRESENT) !== 0;
        const empty = (status.state & reader.SCARD_STATE_EMPTY) !== 0;
        if (options.present && present) finish(undefined, { atr: status.atr, state: status.state });
        else if (!options.present && empty) finish(undefined, { state: status.state });
      });
    });
  });
}

/** waitForCard(readerName, { present: true }) returning the ATR. */
export async function waitForCardPresent(readerName: string, timeoutMs?: number): Promise<Buffer> {
  const state = await waitForCard(readerName, { present: true, timeoutMs });
  return state.atr ?? Buffer.alloc(0);
}

/** waitForCard(readerName, { present: false }). */
export async function waitForCardAbsent(readerName: string, timeoutMs?: number): Promise<void> {
  await waitForCard(readerName, { present: false, timeoutMs });
}
