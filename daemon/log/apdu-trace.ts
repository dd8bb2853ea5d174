/**
 * APDU traces for debug-level logs: the header, the lengths and the status word of every
 * exchange, with the data shown only where it cannot carry a secret.
 *
 * What is masked (shown as `[masked N bytes]`), and why:
 *
 * Command data of
 * - VERIFY (20), CHANGE REFERENCE DATA (24), RESET RETRY COUNTER (2C): PINs and PUKs;
 * - GENERAL AUTHENTICATE (87): management key witnesses and challenges, digests to sign,
 *   peer public keys; all of it is authentication material or data the user signs;
 * - Yubico IMPORT KEY (FE): private key components; Yubico SET MANAGEMENT KEY (FF): the key;
 * - PUT DATA (DB) unless it starts a write of a container everyone may read (`5C tag` names a
 *   container whose read rule is `always`). The containers a PIN protects hold personal data
 *   (fingerprints, facial image, iris images, printed information), and the Printed Information
 *   container 5FC109 is where yubico-piv-tool and ykman store a PIN-protected management key.
 *   Certificates, CHUID, CCC and the other public containers stay visible. A continuation part of
 *   a chained PUT DATA does not name its container and is masked.
 *
 * Response data of
 * - GENERAL AUTHENTICATE (87): signatures, shared secrets, challenges and witnesses;
 * - GET DATA (CB) of a container that is not readable by everyone (or not known): the same
 *   reasoning as PUT DATA; the requested tag list in the command stays visible, so the trace
 *   still tells which container was read;
 * - GET RESPONSE (C0): it continues an earlier answer (a long signature, a PIN-protected
 *   container) that this stateless function cannot see.
 *
 * The mask depends on the instruction only (plus the container tag for GET/PUT DATA), so the
 * parts of a command chain (CLA bit 10) are masked like the command they belong to.
 *
 * `describeApdu` never throws: anything it cannot parse is reported as `{ malformed: true,
 * length }` without any of its bytes.
 */
import { isChained, parseCommandApdu, INS_GET_RESPONSE, parseTlvAt } from '../../apdu/codec/index.js';
import { DATA_TAG, INS } from '../../apdu/piv/core/index.js';
import { dataObjectSpec } from '../../apdu/piv/objects/index.js';

/** Longest data field written out in hex; longer fields show this many bytes and the total. */
export const MAX_TRACED_DATA_BYTES = 512;

/** Instructions whose command data is always masked (see the file comment). */
const SECRET_COMMAND_INS: ReadonlySet<number> = new Set([
  INS.VERIFY,
  INS.CHANGE_REFERENCE_DATA,
  INS.RESET_RETRY_COUNTER,
  INS.GENERAL_AUTHENTICATE,
  INS.YK_IMPORT_KEY,
  INS.YK_SET_MANAGEMENT_KEY,
]);

/** Instructions whose response data is always masked (see the file comment). */
const SECRET_RESPONSE_INS: ReadonlySet<number> = new Set([INS.GENERAL_AUTHENTICATE, INS_GET_RESPONSE]);

export interface MalformedApduTrace {
  readonly malformed: true;
  /** Length of the command, in bytes. */
  readonly length: number;
  /** Status word of the response, when one with a status word was given. */
  readonly sw?: string;
}

export interface ApduTrace {
  /** Header bytes, two uppercase hex digits each. */
  readonly cla: string;
  readonly ins: string;
  readonly p1: string;
  readonly p2: string;
  /** Nc: number of command data bytes. */
  readonly lc: number;
  /** Ne: response bytes the host expects, when Le is present. */
  readonly ne?: number;
  /** Present (true) on a non-final part of a command chain. */
  readonly chained?: true;
  /** Command data in hex, or `[masked N bytes]`. */
  readonly data: string;
  /** Status word in four hex digits, when a response was given. */
  readonly sw?: string;
  /** Response data in hex, `[masked N bytes]`, or `[malformed N bytes]` without a status word. */
  readonly responseData?: string;
}

const hexByte = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

function hex(bytes: Uint8Array): string {
  const shown = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, MAX_TRACED_DATA_BYTES));
  const text = shown.toString('hex').toUpperCase();
  return bytes.length > MAX_TRACED_DATA_BYTES ? `${text}...(${bytes.length} bytes)` : text;
}

const masked = (bytes: Uint8Array): string => (bytes.length === 0 ? '' : `[masked ${bytes.length} bytes]`);

/**
 * True when the GET DATA / PUT DATA `data` starts with a tag list (`5C len tag`) naming a
 * container everyone may read (SP 800-73-4 Part 1 Appendix A access rules).
 */
function namesPublicContainer(data: Uint8Array): boolean {
  try {
    const { tlv } = parseTlvAt(data, 0);
    if (tlv.tag !== DATA_TAG.TAG_LIST || tlv.value.length < 1 || tlv.value.length > 3) return false;
    const tag = tlv.value.reduce((acc, b) => acc * 256 + b, 0);
    return dataObjectSpec(tag)?.read === 'always';
  } catch {
    return false;
  }
}

function statusWord(response: Uint8Array): string {
  const n = response.length;
  return hexByte(response[n - 2]!) + hexByte(response[n - 1]!);
}

function describe(command: Uint8Array, response: Uint8Array | undefined): ApduTrace | MalformedApduTrace {
  let cmd: ReturnType<typeof parseCommandApdu>;
  try {
    cmd = parseCommandApdu(command);
  } catch {
    return response !== undefined && response.length >= 2
      ? { malformed: true, length: command.length, sw: statusWord(response) }
      : { malformed: true, length: command.length };
  }
  const isDataObjectIns = cmd.ins === INS.GET_DATA || cmd.ins === INS.PUT_DATA;
  const publicContainer = isDataObjectIns && namesPublicContainer(cmd.data);
  const maskCommand = SECRET_COMMAND_INS.has(cmd.ins) || (cmd.ins === INS.PUT_DATA && !publicContainer);
  const maskResponse = SECRET_RESPONSE_INS.has(cmd.ins) || (cmd.ins === INS.GET_DATA && !publicContainer);

  const trace: {
    -readonly [K in keyof ApduTrace]: ApduTrace[K];
  } = {
    cla: hexByte(cmd.cla),
    ins: hexByte(cmd.ins),
    p1: hexByte(cmd.p1),
    p2: hexByte(cmd.p2),
    lc: cmd.data.length,
    data: maskCommand ? masked(cmd.data) : hex(cmd.data),
  };
  if (cmd.ne !== undefined) trace.ne = cmd.ne;
  if (isChained(cmd)) trace.chained = true;
  if (response !== undefined) {
    if (response.length < 2) {
      trace.responseData = `[malformed ${response.length} bytes]`;
    } else {
      const body = response.subarray(0, response.length - 2);
      trace.sw = statusWord(response);
      trace.responseData = maskResponse ? masked(body) : hex(body);
    }
  }
  return trace;
}

/**
 * A loggable description of one command (and its response, when given). Never throws; never
 * includes masked bytes.
 */
export function describeApdu(command: Uint8Array, response?: Uint8Array): ApduTrace | MalformedApduTrace {
  try {
    const resp = response instanceof Uint8Array ? response : undefined;
    return describe(command, resp);
  } catch {
    const length = typeof command?.length === 'number' ? command.length : 0;
    return { malformed: true, length };
  }
}
