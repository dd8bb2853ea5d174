/**
 * Canonical JSON for hashing: object keys sorted by code unit, no whitespace, no `undefined`
 * members. The same value always gives the same text, on every node and after a round trip
 * through the database.
 */
import { CardlinkError } from '../../protocol/errors.js';

/** Deepest nesting accepted in audit details. */
export const MAX_CANONICAL_DEPTH = 8;

export function canonicalJson(value: unknown): string {
  return write(value, 0);
}

function write(value: unknown, depth: number): string {
  if (depth > MAX_CANONICAL_DEPTH) throw invalid('nested too deeply');
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid('non-finite number');
    return JSON.stringify(value);
  }
  if (value instanceof Uint8Array) throw invalid('raw bytes (store a digest or a length instead)');
  if (Array.isArray(value)) return `[${value.map((v) => write(v, depth + 1)).join(',')}]`;
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const members = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${write(v, depth + 1)}`);
    return `{${members.join(',')}}`;
  }
  throw invalid(`unsupported value of type ${typeof value}`);
}

function invalid(what: string): CardlinkError {
  return new CardlinkError('ERR_INTERNAL', `audit details not serializable: ${what}`);
}
