/**
 * Prepared statements reused across queries. Kysely's SQLite driver calls `prepare(sql)` for
 * every query; preparing costs more than running most of ours (about a quarter of a millisecond
 * per signature before this cache). Kysely compiles the same query shape to the same SQL with
 * `?` parameters, so the text is a good key; the cache is bounded (least recently used out) in
 * case some query shape varies with its input.
 */
import type BetterSqlite3 from 'better-sqlite3';

/** Statements kept; our query shapes number well under a hundred. */
export const STATEMENT_CACHE_SIZE = 256;

/** What Kysely's SqliteDialect needs of a database. */
export interface PreparingDatabase {
  prepare(sql: string): BetterSqlite3.Statement;
  close(): void;
}

export function withStatementCache(
  database: BetterSqlite3.Database,
  size = STATEMENT_CACHE_SIZE,
): PreparingDatabase {
  const statements = new Map<string, BetterSqlite3.Statement>();
  return {
    prepare(sql) {
      const cached = statements.get(sql);
      if (cached) {
        // Re-insert: Map order is the recency order.
        statements.delete(sql);
        statements.set(sql, cached);
        return cached;
      }
      const statement = database.prepare(sql);
      statements.set(sql, statement);
      if (statements.size > size) statements.delete(statements.keys().next().value!);
      return statement;
    },
    close() {
      statements.clear();
      database.close();
    },
  };
}
