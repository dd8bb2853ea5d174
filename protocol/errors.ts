/**
 * Typed errors shared by every part of cardlink.
 *
 * Each error carries a stable `code` (matched by callers, tests, the wire
 * protocol and the CLI's exit status) and a `context` object of non-secret
 * facts (file names, setting keys, slot numbers). Never put a PIN, PUK, key,
 * token or APDU payload into a message or a context.
 */
export type CardlinkErrorCode =
  /** ApduError codes, one per ISO 7816-4 status word class (apdu/codec/apdu-error.ts). */
  | 'ERR_APDU_WARNING'
  | 'ERR_APDU_EXECUTION_ERROR'
  | 'ERR_APDU_WRONG_LENGTH'
  | 'ERR_APDU_CLA_FUNCTION_NOT_SUPPORTED'
  | 'ERR_APDU_COMMAND_NOT_ALLOWED'
  | 'ERR_APDU_WRONG_PARAMETERS'
  | 'ERR_APDU_WRONG_LE'
  | 'ERR_APDU_INS_NOT_SUPPORTED'
  | 'ERR_APDU_CLA_NOT_SUPPORTED'
  | 'ERR_APDU_NO_PRECISE_DIAGNOSIS'
  | 'ERR_APDU_MALFORMED'
  | 'ERR_TLV_MALFORMED'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_PCSCD_UNAVAILABLE'
  | 'ERR_READER_DRIVER_MISSING'
  | 'ERR_BRIDGE_PROTOCOL'
  | 'ERR_BRIDGE_CLOSED'
  | 'ERR_SLOT_UNAVAILABLE'
  | 'ERR_CARD_STATE'
  | 'ERR_AUTH_TOKEN_INVALID'
  | 'ERR_AUTH_THROTTLED'
  | 'ERR_DEVICE_PROOF_INVALID'
  | 'ERR_IDP_UNAVAILABLE'
  | 'ERR_LOGIN_DENIED'
  | 'ERR_LOGIN_EXPIRED'
  | 'ERR_LOGIN_CANCELLED'
  | 'ERR_FRAME_MALFORMED'
  | 'ERR_STORAGE'
  | 'ERR_KEY_PROVIDER'
  | 'ERR_KEY_FILE_INSECURE'
  | 'ERR_DEVICE_KEY_UNAVAILABLE'
  | 'ERR_SEALED_KEY_INVALID'
  | 'ERR_CARD_NOT_FOUND'
  | 'ERR_CARD_TAKEN_OVER'
  | 'ERR_COMMAND_ALREADY_RECORDED'
  | 'ERR_PROTOCOL_STATE'
  | 'ERR_DEVICE_PENDING'
  | 'ERR_DEVICE_NOT_FOUND'
  | 'ERR_CARD_BUSY'
  | 'ERR_HANDLE_UNKNOWN'
  | 'ERR_TOO_MANY_IN_FLIGHT'
  | 'ERR_RESUME_REJECTED'
  | 'ERR_SERVER_START'
  | 'ERR_CONTROL_AUTH'
  | 'ERR_CONTROL_METHOD'
  | 'ERR_CONTROL_PARAMS'
  | 'ERR_CONTROL_PROTOCOL'
  | 'ERR_CONTROL_UNAVAILABLE'
  | 'ERR_SESSION_LOST'
  | 'ERR_SERVER_TIMEOUT'
  | 'ERR_SERVER_CERTIFICATE'
  | 'ERR_SNAPSHOT_INVALID'
  | 'ERR_NATIVE_MODULE_UNAVAILABLE'
  | 'ERR_USAGE'
  /** `cardlink demo`, or the daemon's vpcd reader: a port it needs is taken. */
  | 'ERR_PORT_IN_USE'
  /** `cardlink demo`: its state directory is from another version, half-written or damaged. */
  | 'ERR_DEMO_STATE'
  | 'ERR_TRAY_HOST_UNAVAILABLE'
  | 'ERR_NOTIFICATIONS_UNAVAILABLE'
  | 'ERR_CA_MISSING'
  | 'ERR_CA_EXISTS'
  | 'ERR_CA_INVALID'
  | 'ERR_ENROLLMENT'
  /** Self-service enrollment of a card whose profile does not allow it (`selfServiceEnrollment`). */
  | 'ERR_ENROLLMENT_NOT_ALLOWED'
  /** The tray's refresh token store (keyring, else a 0600 file) cannot be read or written. */
  | 'ERR_TOKEN_STORE_UNAVAILABLE'
  /** Setting a PIN needs a sign-in at most `pin.freshSignInMaxAgeSeconds` old (auth_time). */
  | 'ERR_SIGN_IN_NOT_FRESH'
  /** The new PIN breaks the card profile's PIN policy (`context.refusal` names the rule). */
  | 'ERR_PIN_POLICY'
  /** The card's PIN is set and its profile does not let a sign-in replace it (PUK or admin). */
  | 'ERR_PIN_SET_NOT_ALLOWED'
  /** A PKCS#12 file whose MAC does not match: the password is wrong, or the file was altered. */
  | 'ERR_PKCS12_PASSWORD'
  /** A PKCS#12 file that cannot be imported: malformed, no key or several, no certificate for the key. */
  | 'ERR_PKCS12_INVALID'
  /** A PKCS#12 file in a form cardlink does not read (RC2 or RC4 encryption), or a key no PIV slot holds. */
  | 'ERR_PKCS12_UNSUPPORTED'
  /** The card profile requires key archival and no usable recovery certificate is configured. */
  | 'ERR_KEY_ARCHIVAL'
  /** `cardlink admin recover-key`: the card has no archived key (with that certificate serial). */
  | 'ERR_ARCHIVED_KEY_NOT_FOUND'
  /** A renewal found the card changed (renewed) by someone else after it began: nothing was written. */
  | 'ERR_CARD_CHANGED_MEANWHILE'
  | 'ERR_INTERNAL';

export class CardlinkError extends Error {
  readonly code: CardlinkErrorCode;
  readonly context: Readonly<Record<string, string | number | boolean>>;

  constructor(
    code: CardlinkErrorCode,
    message: string,
    context: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CardlinkError';
    this.code = code;
    this.context = Object.freeze({ ...context });
  }
}

/** Exit status of the CLI for each error code; 1 is "unexpected". */
export function exitCodeFor(code: CardlinkErrorCode): number {
  switch (code) {
    case 'ERR_USAGE':
      return 64; // EX_USAGE
    case 'ERR_CONFIG_INVALID':
    case 'ERR_DEMO_STATE':
    case 'ERR_CA_MISSING':
    case 'ERR_CA_EXISTS':
    case 'ERR_CA_INVALID':
    case 'ERR_KEY_ARCHIVAL':
      return 78; // EX_CONFIG
    case 'ERR_PCSCD_UNAVAILABLE':
    case 'ERR_READER_DRIVER_MISSING':
    case 'ERR_CONTROL_UNAVAILABLE':
    case 'ERR_DEVICE_KEY_UNAVAILABLE':
    case 'ERR_TOKEN_STORE_UNAVAILABLE':
    case 'ERR_NATIVE_MODULE_UNAVAILABLE':
    case 'ERR_PORT_IN_USE':
      return 69; // EX_UNAVAILABLE
    case 'ERR_AUTH_THROTTLED':
      return 75; // EX_TEMPFAIL: too many failed sign-ins, try again later
    case 'ERR_AUTH_TOKEN_INVALID':
    case 'ERR_DEVICE_PROOF_INVALID':
    case 'ERR_LOGIN_DENIED':
    case 'ERR_CONTROL_AUTH':
    case 'ERR_ENROLLMENT_NOT_ALLOWED':
    case 'ERR_SIGN_IN_NOT_FRESH':
    case 'ERR_PIN_SET_NOT_ALLOWED':
      return 77; // EX_NOPERM
    case 'ERR_PIN_POLICY': // as `cardlink pin` for a new PIN it refuses
    case 'ERR_PKCS12_PASSWORD': // the input file (or its password) is not what it must be
    case 'ERR_PKCS12_INVALID':
    case 'ERR_PKCS12_UNSUPPORTED':
      return 65; // EX_DATAERR
    default:
      return 1;
  }
}
