/**
 * The FrontCard's way to the real card: each remote command is one APDU request of the daemon's
 * session, under the handle the card has in the current session. Without a handle (between
 * sessions) a command fails at once, so the host gets 6F00 instead of waiting; a command waiting
 * for the server when the card leaves the reader fails at once too.
 */
import type { RemoteCardLink } from './front-card.js';
import {
  decodeSnapshot,
  referenceBlocking,
  type CardSnapshot,
  type ReferenceBlocking,
} from '../../apdu/piv/core/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import { FRAME_FLAG, type Frame } from '../../protocol/wire/frames.js';
import { errorFromFrame, type ServerLink } from '../session/server-link.js';

/** Shown when the server could not tell which device took the card. */
export const UNKNOWN_DEVICE_NAME = 'another device';

export class RemoteCard implements RemoteCardLink {
  private current: number | undefined;
  private readonly waiting = new Set<(error: Error) => void>();
  /** Remote round trips, for `diag` and the benchmark. */
  roundTrips = 0;

  constructor(
    private readonly link: ServerLink,
    private readonly cardId: string,
    /** The server said the card was taken over (ERR_CARD_TAKEN_OVER), and by which device. */
    private readonly onTakenOver: (byDeviceName: string) => void,
    /** An answer told whether the PIN or PUK is blocked (reference-blocking.ts). */
    private readonly onReferences: (seen: ReferenceBlocking) => void = () => undefined,
  ) {}

  get handle(): number | undefined {
    return this.current;
  }

  attach(handle: number): void {
    this.current = handle;
  }

  detach(): void {
    this.current = undefined;
  }

  /** Fails every command waiting for the server now. */
  abortWaiting(): void {
    const error = new CardlinkError('ERR_SESSION_LOST', 'the card left the reader');
    for (const fail of this.waiting) fail(error);
    this.waiting.clear();
  }

  async transmit(command: Uint8Array, reset: boolean): Promise<Uint8Array> {
    const answer = await this.ask(
      (handle) => ({ type: 'APDU', handle, command }),
      reset ? FRAME_FLAG.RESET_CARD : 0,
    );
    if (answer.type !== 'APDU_RESULT') throw this.failure(answer);
    const seen = referenceBlocking(command, answer.response);
    if (seen.pin !== undefined || seen.puk !== undefined) this.onReferences(seen);
    return answer.response;
  }

  async snapshot(): Promise<CardSnapshot> {
    const answer = await this.ask((handle) => ({ type: 'GET_SNAPSHOT', handle }), 0);
    if (answer.type !== 'SNAPSHOT') throw this.failure(answer);
    if (!this.link.verifySnapshot(this.cardId, answer.snapshot, answer.snapshotSignature))
      throw new CardlinkError('ERR_SNAPSHOT_INVALID', 'the card snapshot is not signed by the card server');
    return decodeSnapshot(answer.snapshot);
  }

  private ask(body: (handle: number) => Parameters<ServerLink['request']>[0], flags: number): Promise<Frame> {
    const handle = this.current;
    if (handle === undefined)
      return Promise.reject(new CardlinkError('ERR_SESSION_LOST', 'the card is not open in a session'));
    this.roundTrips++;
    return new Promise<Frame>((resolve, reject) => {
      const fail = (error: Error) => reject(error);
      this.waiting.add(fail);
      this.link.request(body(handle), flags).then(
        (frame) => {
          this.waiting.delete(fail);
          resolve(frame);
        },
        (error: Error) => {
          this.waiting.delete(fail);
          reject(error);
        },
      );
    });
  }

  private failure(answer: Frame): CardlinkError {
    // The device's name is a field of the frame (docs/protocol.md, ERROR); the message is for people.
    if (answer.type === 'ERROR' && answer.code === 'ERR_CARD_TAKEN_OVER')
      this.onTakenOver(answer.byDeviceName || UNKNOWN_DEVICE_NAME);
    return errorFromFrame(answer, 'the card server refused the command');
  }
}
