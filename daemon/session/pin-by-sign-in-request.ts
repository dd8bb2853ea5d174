/**
 * The daemon's half of the set-PIN after a fresh sign-in (docs/personalization.md): it forwards
 * the fresh access token and the new PIN to the card server's `POST /v1/pin` over the same TLS
 * trust as the session (server.caFile, server.certificateSha256) and turns the answer into a
 * `SetPinResult`. The server decides everything (the sign-in's age, the card's owner, whether a
 * sign-in may set this card's PIN, the PIN policy); the daemon checks nothing but the transport.
 * The request body is zeroed once written; neither the PIN nor the token is logged.
 */
import https from 'node:https';
import { CardlinkError } from '../../protocol/errors.js';
import { PIN_BY_SIGN_IN_PATH, type SetPinResult } from '../../protocol/pin-by-sign-in.js';
import { PIN_POLICY_REFUSALS, type PinPolicyRefusal } from '../../apdu/piv/core/index.js';
import { pinChecker } from './server-link.js';

/** Largest answer read from the server (JSON of a few fields). */
export const MAX_PIN_ANSWER_BYTES = 4096;

export interface PinRequestOptions {
  /** The card server's URL (`server.url`). */
  readonly serverUrl: string;
  readonly ca?: string | undefined;
  readonly certificateSha256?: string | undefined;
  readonly timeoutMs: number;
}

/**
 * The card server's PIN route for the daemon's `server.url`, which may name the WebSocket scheme
 * (`wss:`, accepted by the daemon's config): the route is plain HTTPS on the same host and port.
 */
export function pinRequestUrl(serverUrl: string): URL {
  const url = new URL(PIN_BY_SIGN_IN_PATH, serverUrl);
  if (url.protocol === 'wss:') url.protocol = 'https:';
  return url;
}

export async function requestPinBySignIn(
  options: PinRequestOptions,
  freshAccessToken: string,
  cardId: string,
  newPin: string,
): Promise<SetPinResult> {
  const url = pinRequestUrl(options.serverUrl);
  const body = Buffer.from(JSON.stringify({ cardId, newPin }), 'utf8');
  const { status, json } = await new Promise<{ status: number; json: Record<string, unknown> }>(
    (resolve, reject) => {
      const req = https.request(
        url,
        {
          method: 'POST',
          headers: {
            Authorization: `Bearer ${freshAccessToken}`,
            'Content-Type': 'application/json',
            'Content-Length': body.length,
          },
          ...(options.ca ? { ca: options.ca } : {}),
          ...(options.certificateSha256
            ? { checkServerIdentity: pinChecker(options.certificateSha256) }
            : {}),
          minVersion: 'TLSv1.2',
          timeout: options.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_PIN_ANSWER_BYTES) res.destroy(new Error('answer too large'));
            else chunks.push(c);
          });
          res.on('end', () => {
            try {
              resolve({
                status: res.statusCode ?? 0,
                json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
              });
            } catch {
              reject(new Error('the answer is not JSON'));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      req.end(body, () => body.fill(0));
    },
  ).catch((error: unknown) => {
    body.fill(0);
    if (error instanceof CardlinkError) throw error;
    throw new CardlinkError(
      'ERR_SERVER_TIMEOUT',
      `The card server could not be asked to set the PIN (${(error as Error).message}).`,
      { server: url.origin },
    );
  });
  if (status === 200 && (json.kind === 'first' || json.kind === 'reset'))
    return { outcome: 'done', kind: json.kind };
  const code = typeof json.code === 'string' ? json.code : '';
  if (code === 'ERR_SIGN_IN_NOT_FRESH') return { outcome: 'sign-in-not-fresh' };
  if (code === 'ERR_PIN_SET_NOT_ALLOWED') return { outcome: 'not-allowed' };
  if (code === 'ERR_PIN_POLICY' && PIN_POLICY_REFUSALS.includes(json.refusal as PinPolicyRefusal))
    return { outcome: 'policy', refusal: json.refusal as PinPolicyRefusal };
  const known = /^ERR_[A-Z_]{1,60}$/.test(code) ? (code as CardlinkError['code']) : 'ERR_INTERNAL';
  const message = typeof json.message === 'string' ? json.message.slice(0, 300) : `HTTP ${status}`;
  throw new CardlinkError(known, `The card server refused to set the PIN: ${message}`, { status });
}
