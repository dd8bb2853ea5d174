/**
 * A private key sealed for the recovery agent: CMS EnvelopedData (RFC 5652 section 6) of the key's
 * PKCS#8, with one KeyTransRecipientInfo for the recovery certificate.
 *
 *   - key transport: RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 8017, parameters as RFC 4055
 *     section 4.1): the recovery certificate is RSA (recovery-certificate.ts);
 *   - content encryption: AES-256-CBC with a fresh key and IV (RFC 3565). Not AES-GCM: in CMS,
 *     GCM is only defined for AuthEnvelopedData (RFC 5083), and the recovery agent's tool of
 *     choice, `openssl cms -decrypt`, opens this EnvelopedData as it is;
 *   - the recipient is named by the certificate's issuer and serial number (version 0 throughout).
 *
 * Built with the @peculiar/asn1-* schemas, the ASN.1 family of the X.509 toolkit (docs/x509.md).
 * Nothing here can open an envelope: only the recovery agent's offline private key can.
 */
import { createCipheriv, publicEncrypt, randomBytes, constants, type KeyObject } from 'node:crypto';
import {
  CMSVersion,
  ContentInfo,
  EncryptedContent,
  EncryptedContentInfo,
  EnvelopedData,
  IssuerAndSerialNumber,
  KeyTransRecipientInfo,
  RecipientIdentifier,
  RecipientInfo,
  RecipientInfos,
  id_data,
  id_envelopedData,
} from '@peculiar/asn1-cms';
import { RsaEsOaepParams, id_RSAES_OAEP, id_mgf1, id_sha256 } from '@peculiar/asn1-rsa';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509';

/** id-aes256-CBC (NIST CSOR, RFC 3565 section 4.1). */
export const ID_AES256_CBC = '2.16.840.1.101.3.4.1.42';
/** AES-256 key and CBC IV lengths, in bytes. */
const CONTENT_KEY_BYTES = 32;
const CBC_IV_BYTES = 16;

/** The recipient of envelopes: a recovery certificate, already checked (recovery-certificate.ts). */
export interface EnvelopeRecipient {
  /** The certificate, DER. */
  readonly der: Uint8Array;
  /** Its RSA public key. */
  readonly publicKey: KeyObject;
}

/** ContentInfo(EnvelopedData) of `content` for `recipient`, DER. */
export function envelopeFor(recipient: EnvelopeRecipient, content: Uint8Array): Uint8Array {
  const certificate = AsnConvert.parse(recipient.der, Certificate);
  const contentKey = randomBytes(CONTENT_KEY_BYTES);
  try {
    const iv = randomBytes(CBC_IV_BYTES);
    const cipher = createCipheriv('aes-256-cbc', contentKey, iv); // PKCS#7 padding, as RFC 5652 6.3 asks
    const encrypted = Buffer.concat([cipher.update(content), cipher.final()]);
    const encryptedKey = publicEncrypt(
      { key: recipient.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      contentKey,
    );

    const sha256 = new AlgorithmIdentifier({ algorithm: id_sha256 }); // parameters absent (RFC 4055 2.1)
    const oaep = new RsaEsOaepParams({
      hashAlgorithm: sha256,
      maskGenAlgorithm: new AlgorithmIdentifier({
        algorithm: id_mgf1,
        parameters: AsnConvert.serialize(sha256),
      }),
    });
    const recipientInfo = new RecipientInfo({
      ktri: new KeyTransRecipientInfo({
        version: CMSVersion.v0,
        rid: new RecipientIdentifier({
          issuerAndSerialNumber: new IssuerAndSerialNumber({
            issuer: certificate.tbsCertificate.issuer,
            serialNumber: certificate.tbsCertificate.serialNumber,
          }),
        }),
        keyEncryptionAlgorithm: new AlgorithmIdentifier({
          algorithm: id_RSAES_OAEP,
          parameters: AsnConvert.serialize(oaep),
        }),
        encryptedKey: new OctetString(encryptedKey),
      }),
    });
    const enveloped = new EnvelopedData({
      version: CMSVersion.v0,
      recipientInfos: new RecipientInfos([recipientInfo]),
      encryptedContentInfo: new EncryptedContentInfo({
        contentType: id_data,
        contentEncryptionAlgorithm: new AlgorithmIdentifier({
          algorithm: ID_AES256_CBC,
          parameters: AsnConvert.serialize(new OctetString(iv)),
        }),
        encryptedContent: new EncryptedContent({ value: new OctetString(encrypted) }),
      }),
    });
    const info = new ContentInfo({
      contentType: id_envelopedData,
      content: AsnConvert.serialize(enveloped),
    });
    return new Uint8Array(AsnConvert.serialize(info));
  } finally {
    contentKey.fill(0);
  }
}
