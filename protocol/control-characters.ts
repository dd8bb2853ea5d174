/**
 * Escaping control characters in text that reaches a log line or a terminal, so that data from a
 * card, a token or a peer can never split a line or drive the terminal. Apart from protocol/log.ts
 * (which needs winston): the CLI prints with it before it has loaded anything else.
 */

/** C0 and C1 controls, DEL and the Unicode line separators. */
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** Escapes C0/C1 control characters (and DEL) as \uXXXX. */
export function escapeControlCharacters(s: string): string {
  return s.replace(CONTROL_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
