/**
 * A PC/SC application for tests and benchmarks: list readers, connect, transmit, disconnect.
 * Each PcscClient is its own child process (test/support/pcsc-app.ts) holding one npm pcsclite
 * context, like a real application; see there why it cannot live in the process that serves the
 * card. Each client holds at most one connection per reader.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import type { AppReply, AppRequest } from './pcsc-app.js';

/** Receive buffer for transmit: extended Le 65536 + SW. */
export const MAX_RESPONSE_BYTES = 65538;
/** How long open() waits for the child's PC/SC context. */
export const APP_START_TIMEOUT_MS = 10000;

export type ShareMode = 'exclusive' | 'shared';
export type Disposition = 'leave' | 'reset' | 'unpower';

const APP_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'pcsc-app.js');

type RequestBody = AppRequest extends infer R ? (R extends AppRequest ? Omit<R, 'id'> : never) : never;

export class PcscCard {
  constructor(
    private readonly app: PcscClient,
    readonly readerName: string,
    readonly protocol: number,
  ) {}

  async transmit(apdu: Uint8Array, maxResponse: number = MAX_RESPONSE_BYTES): Promise<Buffer> {
    const b64 = (await this.app.request({
      op: 'transmit',
      reader: this.readerName,
      apdu: Buffer.from(apdu).toString('base64'),
      max: maxResponse,
    })) as string;
    return Buffer.from(b64, 'base64');
  }

  async disconnect(disposition: Disposition = 'leave'): Promise<void> {
    await this.app.request({ op: 'disconnect', reader: this.readerName, disposition });
  }

  /** n timed round trips of `apdu` after `warmup` untimed ones, measured in the application process (ms). */
  async bench(apdu: Uint8Array, n: number, warmup: number): Promise<number[]> {
    return (await this.app.request({
      op: 'bench',
      reader: this.readerName,
      apdu: Buffer.from(apdu).toString('base64'),
      n,
      warmup,
    })) as number[];
  }
}

export class PcscClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (reply: AppReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else
        p.reject(
          reply.code
            ? new CardlinkError(reply.code as CardlinkErrorCode, reply.error)
            : new Error(reply.error),
        );
    });
    child.once('exit', () => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error('PC/SC application process ended'));
      this.pending.clear();
    });
  }

  /** Starts the application process; rejects with ERR_PCSCD_UNAVAILABLE when pcscd is not reachable. */
  static open(): Promise<PcscClient> {
    const child = fork(APP_SCRIPT, [], { env: process.env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error('PC/SC application process did not start'));
      }, APP_START_TIMEOUT_MS);
      child.once('message', (reply: AppReply) => {
        clearTimeout(timer);
        if (reply.ok) {
          resolve(new PcscClient(child));
        } else {
          child.kill('SIGKILL');
          reject(
            reply.code
              ? new CardlinkError(reply.code as CardlinkErrorCode, reply.error)
              : new Error(reply.error),
          );
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        reject(new Error('PC/SC application process ended during start-up'));
      });
    });
  }

  request(body: RequestBody): Promise<unknown> {
    if (this.exited) return Promise.reject(new Error('PC/SC application process ended'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ ...body, id } as AppRequest);
    });
  }

  async readerNames(): Promise<string[]> {
    return (await this.request({ op: 'readers' })) as string[];
  }

  async connect(readerName: string, shareMode: ShareMode = 'shared'): Promise<PcscCard> {
    const protocol = (await this.request({ op: 'connect', reader: readerName, share: shareMode })) as number;
    return new PcscCard(this, readerName, protocol);
  }

  /** Ends the application (its connections go with it). */
  async close(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}
