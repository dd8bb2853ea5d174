/**
 * CRLs of the issuing CA (RFC 5280 section 5): every revoked certificate that has not expired,
 * with its reason, a CRL number taken in the same transaction that stores the CRL, and the CA's
 * key identifier. The CRL is signed when a revocation happens (enrollment that supersedes, erase)
 * and by `cardlink admin ca crl`; the card server serves the stored one (server/http/ca-routes.ts, CRL_PATH).
 */
import {
  AuthorityKeyIdentifierExtension,
  Extension,
  SubjectKeyIdentifierExtension,
  X509CrlGenerator,
  X509CrlReason,
} from '../../apdu/piv/certificates/index.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { listRevokedCertificates, storeCrl, takeCrlNumber, type Storage } from '../storage/index.js';
import { openIssuingCa, type IssuingCa } from './issuing-ca.js';

/** Days until a CRL's nextUpdate: relying parties refuse it afterwards, so re-sign within it (`ca crl`). */
export const CRL_VALIDITY_DAYS = 7;
/** id-ce-cRLNumber, RFC 5280 section 5.2.3. */
const CRL_NUMBER_OID = '2.5.29.20';

/** RFC 5280 section 5.3.1 reason names, as the register stores them. */
export const REVOCATION_REASONS = {
  unspecified: X509CrlReason.unspecified,
  keyCompromise: X509CrlReason.keyCompromise,
  affiliationChanged: X509CrlReason.affiliationChanged,
  superseded: X509CrlReason.superseded,
  cessationOfOperation: X509CrlReason.cessationOfOperation,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

export interface IssuedCrl {
  readonly crlNumber: number;
  readonly der: Uint8Array;
  readonly entries: number;
  readonly nextUpdate: Date;
}

/** Why the CRL after a committed change was not signed: the error's code and message (no secrets in them). */
export interface CrlError {
  readonly code: string;
  readonly message: string;
}

/** What the CLI and the server's log say when a CRL after a committed change was not signed. */
export const CRL_NOT_RESIGNED = 'CRL not re-signed: run `cardlink admin ca crl`';

/**
 * The CRL after a change that revoked and has committed (enrollment, renewal). Its failure (an HSM
 * busy or away, a KEK error) is returned, not thrown: the card has changed and the revocation is in
 * the register, so an error would say the change failed and invite a retry that changes the card
 * again; the next `ca crl`, or the server's own re-signing, lists the revocation.
 */
export async function issueCrlAfterCommit(options: {
  storage: Storage;
  kek: KekProvider;
  ca?: IssuingCa | undefined;
  actor: string;
}): Promise<{ crlNumber?: number; crlError?: CrlError }> {
  try {
    const { ca, ...rest } = options;
    return { crlNumber: (await issueCrl({ ...rest, ...(ca ? { ca } : {}) })).crlNumber };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return {
      crlError: {
        code: typeof code === 'string' ? code : 'ERR_INTERNAL',
        message: error instanceof Error ? error.message : String(error),
      },
    };
  }
}

/** Signs and stores a new CRL. Opens the CA unless an open one is given. */
export async function issueCrl(options: {
  storage: Storage;
  kek: KekProvider;
  ca?: IssuingCa;
  actor: string;
  now?: Date;
}): Promise<IssuedCrl> {
  const { storage } = options;
  const ca = options.ca ?? (await openIssuingCa(storage, options.kek));
  const thisUpdate = new Date(Math.floor((options.now ?? new Date()).getTime() / 1000) * 1000);
  const nextUpdate = new Date(thisUpdate.getTime() + CRL_VALIDITY_DAYS * 86_400_000);
  const caSki = ca.certificate.getExtension(SubjectKeyIdentifierExtension);
  const aki = caSki
    ? new AuthorityKeyIdentifierExtension(caSki.keyId)
    : await AuthorityKeyIdentifierExtension.create(ca.certificate, false, ca.signer.crypto);
  return storage.transaction(async (tx) => {
    const crlNumber = await takeCrlNumber(tx, ca.record.id);
    const revoked = await listRevokedCertificates(tx, ca.record.id, thisUpdate);
    const crl = await X509CrlGenerator.create(
      {
        issuer: ca.certificate.subjectName,
        thisUpdate,
        nextUpdate,
        entries: revoked.map((r) => ({
          serialNumber: r.serial,
          revocationDate: new Date(r.revokedAt!),
          reason:
            REVOCATION_REASONS[(r.revocationReason ?? 'unspecified') as RevocationReason] ??
            X509CrlReason.unspecified,
        })),
        extensions: [new Extension(CRL_NUMBER_OID, false, derInteger(crlNumber)), aki],
        signingKey: ca.signer.keys.privateKey,
        signingAlgorithm: ca.signer.signingAlgorithm,
      },
      ca.signer.crypto,
    );
    const der = new Uint8Array(crl.rawData);
    await storeCrl(tx, ca.record.id, crlNumber, der);
    await appendAudit(tx, {
      actor: options.actor,
      eventType: AUDIT_EVENTS.crlIssued,
      details: {
        caId: ca.record.id,
        crlNumber,
        entries: revoked.length,
        nextUpdate: nextUpdate.toISOString(),
      },
    });
    return { crlNumber, der, entries: revoked.length, nextUpdate };
  });
}

/** DER INTEGER of a non-negative safe integer (X.690 section 8.3: minimal, two's complement). */
export function derInteger(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError('a non-negative safe integer is expected');
  const bytes: number[] = [];
  let v = BigInt(value);
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return Uint8Array.from([0x02, bytes.length, ...bytes]);
}
