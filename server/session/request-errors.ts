/**
 * How the session layer refuses a request and encodes its answers. Shared by session
 * establishment, card handling and the request router: one definition of a refusal and of "this
 * answer fits a frame".
 */
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import { encodeFrame } from '../../protocol/wire/frame-codec.js';
import type { Frame } from '../../protocol/wire/frames.js';

/** A request refused with an ERROR frame; the connection stays open. */
export class RequestError extends CardlinkError {
  constructor(
    code: CardlinkErrorCode,
    message: string,
    context: Record<string, string | number | boolean> = {},
  ) {
    super(code, message, context);
    this.name = 'RequestError';
  }
}

/** ERR_CARD_TAKEN_OVER for a request on a handle another device took; names it in the ERROR frame. */
export class CardTakenOverRequestError extends RequestError {
  constructor(readonly byDeviceName: string) {
    super('ERR_CARD_TAKEN_OVER', `the card was taken over by ${byDeviceName}`);
    this.name = 'CardTakenOverRequestError';
  }
}

export const errorFrame = (id: number, code: string, message: string): Frame => ({
  type: 'ERROR',
  id,
  flags: 0,
  code,
  message,
});

/**
 * `frame` encoded as the connection will send it; throws when it cannot be (too large, a field out
 * of range). State that an answer reports is committed only after this succeeded.
 */
export function encodeAnswer(frame: Frame, maxFrameBytes: number): Uint8Array {
  return encodeFrame(frame, { maxFrameBytes });
}

/** Unix seconds, as the protocol's u32 times carry them. */
export const unixSeconds = (date: Date): number => Math.floor(date.getTime() / 1000);
