/**
 * The CRL for relying parties that fetch it over plain HTTP, and kept fresh
 * (docs/personalization.md "The CRL", docs/server-config.md `crl`):
 *
 * - Windows (CryptoAPI) fetches CRL distribution points over `http:` only, so the server may
 *   serve `GET /ca/crl` and `GET /ca/cert` on a second, plain-HTTP listener (`crl.httpPort`;
 *   loopback by default, like the main listener; off unless configured). It serves nothing else:
 *   the CRL and the CA certificate are public and signed, so TLS adds nothing to them.
 * - The CRL is re-signed by the server before it runs out: every `CRL_CHECK_INTERVAL_MS` the
 *   current CRL's nextUpdate is compared with now, and when less than `crl.resignBeforeHours`
 *   remain (or no CRL was signed yet while certificates exist) a new one is signed. With several
 *   server nodes each may re-sign; every CRL is complete and numbered, so that is harmless.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { X509Crl } from '../../apdu/piv/certificates/index.js';
import type { Logger } from '../../protocol/log.js';
import { issueCrl } from '../ca/crl.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { findIssuingCa, type Storage } from '../storage/index.js';
import { handleCaRequest } from './ca-routes.js';
import { reply } from './responses.js';

/** How often the server checks whether the CRL must be re-signed. */
export const CRL_CHECK_INTERVAL_MS = 3_600_000;

/** Seconds a plain-HTTP request may take to send its headers (the listener serves two small documents). */
export const CRL_HTTP_HEADERS_TIMEOUT_MS = 10_000;

export interface CrlPublisherOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly logger: Logger;
  /** The plain-HTTP listener, or undefined for none. */
  readonly http?: { readonly host: string; readonly port: number } | undefined;
  /** Re-sign when the current CRL has fewer than this many hours left. */
  readonly resignBeforeHours: number;
  readonly checkIntervalMs?: number;
}

export interface CrlPublisher {
  /** The plain-HTTP listener's bound port, when there is one. */
  readonly httpPort: number | undefined;
  /** Checks now, and re-signs if due; resolves with the new CRL number or undefined. */
  check(now?: Date): Promise<number | undefined>;
  close(): Promise<void>;
}

export async function startCrlPublisher(options: CrlPublisherOptions): Promise<CrlPublisher> {
  const { storage, kek, logger } = options;
  let server: http.Server | undefined;
  if (options.http) {
    const s = http.createServer({
      headersTimeout: CRL_HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: CRL_HTTP_HEADERS_TIMEOUT_MS,
    });
    s.on('request', (req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return reply(res, 405, { error: 'method not allowed' });
      if (!handleCaRequest(storage, path, req, res)) reply(res, 404, { error: 'not found' });
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(options.http!.port, options.http!.host, () => {
        s.off('error', reject);
        resolve();
      });
    });
    server = s;
    logger.info('CRL listener (plain HTTP)', {
      host: options.http.host,
      port: (s.address() as AddressInfo).port,
    });
  }

  let running: Promise<number | undefined> | undefined;
  const check = (now = new Date()): Promise<number | undefined> => {
    running ??= due(storage, options.resignBeforeHours, now)
      .then(async (isDue) => {
        if (!isDue) return undefined;
        const crl = await issueCrl({ storage, kek, actor: 'server:crl-refresh', now });
        logger.info('CRL re-signed before it runs out', { crlNumber: crl.crlNumber });
        return crl.crlNumber;
      })
      .catch((error: unknown) => {
        logger.warn('could not re-sign the CRL', { error: (error as Error).message });
        return undefined;
      })
      .finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => void check(), options.checkIntervalMs ?? CRL_CHECK_INTERVAL_MS);
  timer.unref();
  void check();

  return {
    httpPort: server ? (server.address() as AddressInfo).port : undefined,
    check,
    async close() {
      clearInterval(timer);
      await running;
      if (server) {
        const s = server;
        await new Promise<void>((resolve) => {
          s.close(() => resolve());
          s.closeAllConnections();
        });
      }
    },
  };
}

/** Whether the CRL must be signed now: a CA exists and its CRL is missing or runs out within the margin. */
async function due(storage: Storage, resignBeforeHours: number, now: Date): Promise<boolean> {
  const ca = await findIssuingCa(storage);
  if (!ca) return false;
  if (!ca.crl) return true;
  const nextUpdate = new X509Crl(ca.crl).nextUpdate;
  return nextUpdate === undefined || nextUpdate.getTime() - now.getTime() < resignBeforeHours * 3_600_000;
}
