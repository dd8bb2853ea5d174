/**
 * A fuzz property as both runners use it: the CI tests (test/, at CI depth, failing on the first
 * bad case) and the depth run (bench/fuzz-depth.ts, ≥ 1M cases, counting every bad case). Keeping
 * the generator and the check here, outside test/ and bench/, means both run the same property:
 * a change to one is a change to the other.
 *
 * A check never throws: what the code under test threw becomes a `throw` verdict, a broken
 * expectation a `failure`, so a runner can count them instead of stopping at the first.
 */
import type fc from 'fast-check';

export type Verdict =
  { readonly ok: true } | { readonly ok: false; readonly kind: 'throw' | 'failure'; readonly detail: string };

export const OK: Verdict = Object.freeze({ ok: true });

export function failure(detail: string): Verdict {
  return { ok: false, kind: 'failure', detail };
}

export function thrown(what: string, error: unknown): Verdict {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return { ok: false, kind: 'throw', detail: `${what} threw ${text}` };
}

export interface FuzzProperty<T> {
  /** Short name, also the key of its result in bench/results/fuzz-depth.json. */
  readonly name: string;
  /** What one case is and what must hold for it. */
  readonly description: string;
  readonly arbitrary: fc.Arbitrary<T>;
  check(input: T): Verdict;
}

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
