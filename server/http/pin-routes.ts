/**
 * `POST /v1/pin`: the set-PIN after a fresh sign-in (server/cards/pin-by-sign-in.ts), asked by the
 * daemon for its user (docs/personalization.md). The fresh access token travels as
 * `Authorization: Bearer`, the body is `{"cardId": "...", "newPin": "..."}` (JSON, at most
 * `MAX_PIN_REQUEST_BYTES`). The answer is `{"kind": "first"|"reset"}` or `{"code", "message",
 * "refusal"?}` with the CardlinkError's code. The PIN is never logged nor put in an answer; its
 * Buffer is zeroed once the verifier is made.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { setPinBySignIn, type PinBySignInDeps } from '../cards/pin-by-sign-in.js';
import { reply } from './responses.js';

import { PIN_BY_SIGN_IN_PATH } from '../../protocol/pin-by-sign-in.js';

export { PIN_BY_SIGN_IN_PATH };
/** Largest request body: a card id and an 8-digit PIN fit many times over. */
export const MAX_PIN_REQUEST_BYTES = 1024;

/** HTTP status of each refusal; anything else is 500 without detail. */
const STATUS: Partial<Record<string, number>> = {
  ERR_AUTH_TOKEN_INVALID: 401,
  ERR_SIGN_IN_NOT_FRESH: 401,
  ERR_PIN_SET_NOT_ALLOWED: 403,
  ERR_CARD_NOT_FOUND: 404,
  ERR_CARD_TAKEN_OVER: 409,
  ERR_PIN_POLICY: 422,
  ERR_IDP_UNAVAILABLE: 503,
  ERR_STORAGE: 503,
};

/** Answers the set-PIN path and returns true, or returns false for any other path. */
export function handlePinRequest(
  deps: PinBySignInDeps,
  logger: Logger,
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
): boolean {
  if (path !== PIN_BY_SIGN_IN_PATH) return false;
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    reply(res, 405, { code: 'ERR_USAGE', message: 'POST only' });
    return true;
  }
  void answer(deps, logger, req, res);
  return true;
}

async function answer(
  deps: PinBySignInDeps,
  logger: Logger,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  let newPin: Buffer | undefined;
  try {
    const auth = req.headers.authorization ?? '';
    const token = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(auth)?.[1];
    if (!token) throw new CardlinkError('ERR_AUTH_TOKEN_INVALID', 'A bearer access token is required.');
    if (!/^application\/json(;|$)/.test(req.headers['content-type'] ?? ''))
      throw new CardlinkError('ERR_USAGE', 'The body must be application/json.');
    const body = await readBody(req);
    let parsed: { cardId?: unknown; newPin?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
    } finally {
      body.fill(0);
    }
    const { cardId } = parsed;
    if (typeof cardId !== 'string' || cardId.length === 0 || cardId.length > 64)
      throw new CardlinkError('ERR_USAGE', 'cardId must be a string of 1..64 characters.');
    if (typeof parsed.newPin !== 'string' || parsed.newPin.length > 64)
      throw new CardlinkError('ERR_USAGE', 'newPin must be a string.');
    newPin = Buffer.from(parsed.newPin, 'latin1');
    const result = await setPinBySignIn(deps, token, cardId, newPin);
    logger.info('PIN set after a fresh sign-in', { card: cardId, kind: result.kind });
    reply(res, 200, result);
  } catch (error) {
    const code = error instanceof CardlinkError ? error.code : 'ERR_INTERNAL';
    const status = code === 'ERR_USAGE' ? 400 : (STATUS[code] ?? 500);
    if (status === 500) logger.error('set-PIN request failed', { code });
    else logger.info('set-PIN request refused', { code });
    const known = error instanceof CardlinkError && status !== 500;
    reply(res, status, {
      code,
      message: known ? error.message : 'The server could not set the PIN.',
      ...(known && typeof error.context.refusal === 'string' ? { refusal: error.context.refusal } : {}),
    });
  } finally {
    newPin?.fill(0);
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_PIN_REQUEST_BYTES) {
        for (const c of chunks) c.fill(0);
        reject(new CardlinkError('ERR_USAGE', `The body is over ${MAX_PIN_REQUEST_BYTES} bytes.`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      const all = Buffer.concat(chunks);
      for (const c of chunks) c.fill(0);
      resolve(all);
    });
    req.on('error', reject);
  });
}
