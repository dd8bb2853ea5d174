/**
 * Types for the parts of npm `pcsclite` 1.0.1 (native binding over libpcsclite) that cardlink uses.
 * Declared here because the package's own index.d.ts does not export its interface types.
 * Source of truth: node_modules/pcsclite/lib/pcsclite.js and src/*.cpp.
 */
declare module 'pcsclite' {
  import type { EventEmitter } from 'node:events';

  namespace pcsclite {
    interface ReaderStatus {
      /** SCARD_STATE_* bits of the reader (SCardGetStatusChange dwEventState). */
      state: number;
      atr?: Buffer;
    }

    interface ConnectOptions {
      /** SCARD_SHARE_*; the package defaults to SCARD_SHARE_EXCLUSIVE. */
      share_mode?: number;
      /** SCARD_PROTOCOL_* bits; the package defaults to T0 | T1. */
      protocol?: number;
    }

    type Callback<T> = (err: Error | null | undefined, value: T) => void;

    interface CardReader extends EventEmitter {
      readonly name: string;
      readonly connected: boolean;
      state: number;
      readonly SCARD_SHARE_SHARED: number;
      readonly SCARD_SHARE_EXCLUSIVE: number;
      readonly SCARD_SHARE_DIRECT: number;
      readonly SCARD_PROTOCOL_T0: number;
      readonly SCARD_PROTOCOL_T1: number;
      readonly SCARD_PROTOCOL_RAW: number;
      readonly SCARD_STATE_UNAWARE: number;
      readonly SCARD_STATE_IGNORE: number;
      readonly SCARD_STATE_CHANGED: number;
      readonly SCARD_STATE_UNKNOWN: number;
      readonly SCARD_STATE_UNAVAILABLE: number;
      readonly SCARD_STATE_EMPTY: number;
      readonly SCARD_STATE_PRESENT: number;
      readonly SCARD_STATE_ATRMATCH: number;
      readonly SCARD_STATE_EXCLUSIVE: number;
      readonly SCARD_STATE_INUSE: number;
      readonly SCARD_STATE_MUTE: number;
      readonly SCARD_LEAVE_CARD: number;
      readonly SCARD_RESET_CARD: number;
      readonly SCARD_UNPOWER_CARD: number;
      readonly SCARD_EJECT_CARD: number;
      on(event: 'status', listener: (status: ReaderStatus) => void): this;
      on(event: 'error', listener: (err: Error) => void): this;
      on(event: 'end', listener: () => void): this;
      get_status(cb: (err: Error | null | undefined, state: number, atr?: Buffer) => void): void;
      connect(options: ConnectOptions, cb: Callback<number>): void;
      disconnect(disposition: number, cb: (err: Error | null | undefined) => void): void;
      transmit(data: Buffer, resLen: number, protocol: number, cb: Callback<Buffer>): void;
      /** Stops the reader's status thread. */
      close(): void;
    }

    interface PCSCLite extends EventEmitter {
      readonly readers: Record<string, CardReader>;
      on(event: 'reader', listener: (reader: CardReader) => void): this;
      on(event: 'error', listener: (err: Error) => void): this;
      /** Stops the reader-list thread (not the readers' threads). */
      close(): void;
    }
  }

  /** Establishes a PC/SC context; throws synchronously when pcscd is not reachable. */
  function pcsclite(): pcsclite.PCSCLite;
  export = pcsclite;
}
