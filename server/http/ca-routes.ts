/**
 * The issuing CA's public documents on the card server's listener (docs/personalization.md):
 * `GET /ca/crl`, the current CRL (DER, `application/pkix-crl`, RFC 2585 section 4), which every
 * issued certificate names as its CRL distribution point, and `GET /ca/cert`, the CA certificate
 * (DER, `application/pkix-cert`). Both are read from the database on each request (one row by
 * primary key), so a CRL signed by `cardlink admin` on another process is served at once.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { findIssuingCa, type Storage } from '../storage/index.js';
import { reply, replyBytes } from './responses.js';

/** Path under the server's public URL where the current CRL is served (DER). */
export const CRL_PATH = '/ca/crl';
/** Path where the CA certificate is served (DER). */
export const CA_CERTIFICATE_PATH = '/ca/cert';

/** `https://host:port/anything` -> `https://host:port/ca/crl`: where this server serves its CRL. */
export function crlUrlFor(publicUrl: string): string {
  const url = new URL(publicUrl);
  url.pathname = CRL_PATH;
  url.search = '';
  url.hash = '';
  return url.href;
}

/** Seconds relying parties may cache the CRL before fetching it again (a revocation shows within this). */
export const CRL_MAX_AGE_SECONDS = 300;
/** Seconds the CA certificate may be cached. */
export const CA_CERTIFICATE_MAX_AGE_SECONDS = 86_400;

/** Answers a CA path and returns true, or returns false for any other path. */
export function handleCaRequest(
  storage: Storage,
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
): boolean {
  if (path !== CRL_PATH && path !== CA_CERTIFICATE_PATH) return false;
  const head = req.method === 'HEAD';
  void findIssuingCa(storage)
    .then((ca) => {
      if (path === CA_CERTIFICATE_PATH) {
        if (!ca) return reply(res, 404, { error: 'no issuing CA' });
        return replyBytes(res, ca.certificate, 'application/pkix-cert', CA_CERTIFICATE_MAX_AGE_SECONDS, head);
      }
      if (!ca?.crl) return reply(res, 404, { error: 'no CRL issued yet' });
      return replyBytes(res, ca.crl, 'application/pkix-crl', CRL_MAX_AGE_SECONDS, head);
    })
    .catch(() => reply(res, 503, { error: 'database unavailable' }));
  return true;
}
