/**
 * Queries written with the query builder, compiled once per dialect and shape, and run many times
 * with new values: for the statements on the signing path, where building and compiling the same
 * query again cost more than running it (about 20 µs a statement on the test machine).
 *
 *   const recordOne = compiledQuery((db, p) =>
 *     db.insertInto('applied_commands').values({ session_id: p(0), seq: p(1), ... }));
 *   await recordOne.execute(tx, [sessionId, seq, ...]);
 *
 * `p(i)` stands for the i-th value given to `execute`. The SQL still comes from Kysely, so both
 * dialects keep one code path; only the values change between runs. A query whose shape depends on
 * a count (a multi-row insert) takes that count as `shape` and is compiled once for each count.
 */
import type { Compilable, Kysely, QueryResult } from 'kysely';
import type { Database } from './schema.js';
import type { Queryable, SqlDialect } from './storage.js';

/** Marks where the i-th value goes; never reaches a database. */
class Placeholder {
  constructor(readonly index: number) {}
}

/** Stands for the i-th value of `execute` in a query under construction. */
export type PlaceholderOf = <T>(index: number) => T;

const placeholder: PlaceholderOf = <T>(index: number) => new Placeholder(index) as unknown as T;

interface Compiled {
  readonly sql: string;
  /** For each parameter of the SQL: the index of the value it takes, or the constant itself. */
  readonly slots: readonly (Placeholder | { readonly constant: unknown })[];
}

/** Compiled shapes kept per query; a count beyond it compiles each time (still correct). */
const MAX_SHAPES = 32;

export interface CompiledQueryOf<R> {
  execute(q: Queryable, values: readonly unknown[], shape?: number): Promise<QueryResult<R>>;
}

export function compiledQuery<R>(
  build: (db: Kysely<Database>, p: PlaceholderOf, shape: number, dialect: SqlDialect) => Compilable<R>,
): CompiledQueryOf<R> {
  const cache = new Map<string, Compiled>();
  const compile = (q: Queryable, shape: number): Compiled => {
    const key = `${q.dialect} ${shape}`;
    let compiled = cache.get(key);
    if (compiled) return compiled;
    const { sql, parameters } = build(q.db, placeholder, shape, q.dialect).compile();
    compiled = {
      sql,
      slots: parameters.map((value) => (value instanceof Placeholder ? value : { constant: value })),
    };
    if (cache.size < MAX_SHAPES) cache.set(key, compiled);
    return compiled;
  };
  return {
    async execute(q, values, shape = 1) {
      const { sql, slots } = compile(q, shape);
      const parameters = slots.map((slot) => {
        if (!(slot instanceof Placeholder)) return slot.constant;
        if (slot.index >= values.length) {
          throw new RangeError(`compiled query wants value ${slot.index}, got ${values.length}`);
        }
        return values[slot.index];
      });
      return q.executeCompiled<R>(sql, parameters);
    },
  };
}
