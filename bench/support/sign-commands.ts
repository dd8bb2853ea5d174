/**
 * The GENERAL AUTHENTICATE signing commands the benchmarks send, byte for byte as OpenSC sends
 * them to a PIV card (SP 800-73-4 Part 2, 3.2.4).
 */

/** DigestInfo prefix of SHA-256 (RFC 8017 section 9.2, note 1). */
export const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/** GENERAL AUTHENTICATE sign, P-256 on 9E: `00 87 11 9E 26 7C 24 82 00 81 20 <digest> 00`. */
export function p256Command(digest: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from('008711' + '9E' + '26' + '7C24' + '8200' + '8120', 'hex'),
    digest,
    Buffer.of(0x00),
  ]);
}

/** PKCS#1 v1.5 signature block of a SHA-256 digest for a 2048-bit modulus (RFC 8017 9.2). */
export function pkcs1Block(digest: Uint8Array): Buffer {
  const t = Buffer.concat([SHA256_DIGEST_INFO, digest]);
  const ps = Buffer.alloc(256 - 3 - t.length, 0xff);
  return Buffer.concat([Buffer.of(0x00, 0x01), ps, Buffer.of(0x00), t]);
}

/**
 * GENERAL AUTHENTICATE sign, RSA-2048 on 9A, extended length (apdu/codec/command-apdu.ts parses
 * case 4E): `00 87 07 9A 00 01 0A 7C 82 01 06 82 00 81 82 01 00 <256> 00 00`.
 */
export function rsaCommand(block: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from('0087079A' + '00010A' + '7C820106' + '8200' + '81820100', 'hex'),
    block,
    Buffer.of(0x00, 0x00),
  ]);
}

/** Offset of the digest bytes inside the command built by p256Command / rsaCommand. */
export const P256_DIGEST_OFFSET = 11;
export const RSA_DIGEST_OFFSET = 7 + 4 + 2 + 4 + (256 - 32);
