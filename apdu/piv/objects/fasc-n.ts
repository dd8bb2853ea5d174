/**
 * FASC-N, the Federal Agency Smart Credential Number carried in the CHUID (tag 30). Encoding from
 * "Technical Implementation Guidance: Smart Card Enabled Physical Access Control Systems" (TIG
 * SCEPACS) section 6: 40 characters of 5 bits each (4 data bits, least significant first, then
 * an odd parity bit), packed most significant bit first into 25 bytes:
 *
 *   SS AGENCY(4) FS SYSTEM(4) FS CREDENTIAL(6) FS CS(1) FS ICI(1) FS PI(10) OC(1) OI(4) POA(1) ES LRC
 *
 * Non-federal issuers use agency code 9999 (SP 800-73-4 Part 1 section 3.1.2; FIPS 201-3 PIV-I
 * practice: 9999 with the GUID as the unique card identifier).
 */

export interface FascN {
  /** 4 digits. */
  readonly agencyCode: string;
  /** 4 digits. */
  readonly systemCode: string;
  /** 6 digits. */
  readonly credentialNumber: string;
  /** Credential series, 1 digit. */
  readonly credentialSeries: string;
  /** Individual credential issue, 1 digit. */
  readonly individualCredentialIssue: string;
  /** Person identifier, 10 digits. */
  readonly personIdentifier: string;
  /** Organizational category, 1 digit. */
  readonly organizationalCategory: string;
  /** Organizational identifier, 4 digits. */
  readonly organizationalIdentifier: string;
  /** Person/organization association category, 1 digit. */
  readonly personAssociation: string;
}

/** Encoded FASC-N length in bytes (TIG SCEPACS section 6.1). */
export const FASCN_BYTES = 25;
/** Agency code for credentials not issued by a federal agency. */
export const NON_FEDERAL_AGENCY_CODE = '9999';

/** Start sentinel, field separator and end sentinel (TIG SCEPACS Table 6-1). */
const SS = 0xb;
const FS = 0xd;
const ES = 0xf;

const FIELDS: readonly [keyof FascN, number][] = [
  ['agencyCode', 4],
  ['systemCode', 4],
  ['credentialNumber', 6],
  ['credentialSeries', 1],
  ['individualCredentialIssue', 1],
  ['personIdentifier', 10],
  ['organizationalCategory', 1],
  ['organizationalIdentifier', 4],
  ['personAssociation', 1],
];

/**
 * The FASC-N of every cardlink card: agency, system and credential number all 9s (non-federal
 * issuer), organizational category 3 (commercial enterprise, TIG SCEPACS Table 6-2), person
 * association 1 (employee). Relying parties identify the card by the CHUID GUID instead.
 */
export const NON_FEDERAL_FASCN: FascN = Object.freeze({
  agencyCode: NON_FEDERAL_AGENCY_CODE,
  systemCode: '9999',
  credentialNumber: '999999',
  credentialSeries: '0',
  individualCredentialIssue: '1',
  personIdentifier: '0000000000',
  organizationalCategory: '3',
  organizationalIdentifier: '0000',
  personAssociation: '1',
});

export function encodeFascN(fascn: FascN): Uint8Array {
  const chars: number[] = [SS];
  FIELDS.forEach(([name, length], i) => {
    const value = fascn[name];
    if (value.length !== length || !/^[0-9]+$/.test(value)) {
      throw new RangeError(`FASC-N field ${name} must be ${length} digits`);
    }
    for (const c of value) chars.push(c.charCodeAt(0) - 0x30);
    // Separators follow the first five fields; PI, OC, OI and POA run together.
    if (i < 5) chars.push(FS);
  });
  chars.push(ES);
  chars.push(chars.reduce((lrc, c) => lrc ^ c, 0));
  const out = new Uint8Array(FASCN_BYTES);
  let bit = 0;
  for (const c of chars) {
    for (const b of fiveBits(c)) {
      if (b) out[bit >> 3]! |= 0x80 >> (bit & 7);
      bit++;
    }
  }
  return out;
}

/** 4 data bits least significant first, then odd parity. */
function fiveBits(c: number): number[] {
  const data = [c & 1, (c >> 1) & 1, (c >> 2) & 1, (c >> 3) & 1];
  const ones = data.reduce((a, b) => a + b, 0);
  return [...data, ones % 2 === 0 ? 1 : 0];
}

/**
 * The 40 characters of an encoded FASC-N as a string (digits, and `S`, `F`, `E` for the
 * sentinels and separators, then the LRC as a hex digit). Throws on a parity error.
 */
export function decodeFascNCharacters(bytes: Uint8Array): string {
  if (bytes.length !== FASCN_BYTES) throw new RangeError('FASC-N must be 25 bytes');
  let out = '';
  for (let ch = 0; ch < 40; ch++) {
    let value = 0;
    let ones = 0;
    for (let k = 0; k < 5; k++) {
      const bit = ch * 5 + k;
      const b = (bytes[bit >> 3]! >> (7 - (bit & 7))) & 1;
      ones += b;
      if (k < 4) value |= b << k;
    }
    if (ones % 2 !== 1) throw new RangeError(`FASC-N parity error in character ${ch}`);
    out +=
      ch === 39
        ? value.toString(16).toUpperCase()
        : value === SS
          ? 'S'
          : value === FS
            ? 'F'
            : value === ES
              ? 'E'
              : String(value);
  }
  return out;
}
