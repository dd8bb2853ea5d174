/**
 * The storage boundary: every database query lives in server/storage/. The project's ESLint
 * configuration (eslint.config.js, run by the suite over the whole tree) refuses the query builder,
 * the drivers, SQL templates and the storage's Kysely instance anywhere else in the product, and
 * allows them in server/storage/. Checked here with the real configuration on typical snippets.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

/** The repository root, from dist/test/server/storage/. */
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

const eslint = new ESLint({ cwd: ROOT });

/** Messages of the boundary rules for `code` as if it were the file `file`. */
async function boundaryErrors(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: file });
  return result!.messages
    .filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'no-restricted-syntax')
    .map((m) => m.message);
}

const SNIPPETS: Record<string, string> = {
  'an import of the query builder': "import { sql } from 'kysely';\nexport const q = sql`select 1`;\n",
  'an import of a driver': "import pg from 'pg';\nexport const Pool = pg.Pool;\n",
  'a compiled query': [
    "import { compiledQuery } from '../storage/compiled-query.js';",
    "export const Q = compiledQuery((db) => db.selectFrom('cards').select('id'));",
    '',
  ].join('\n'),
  "the storage's Kysely instance": [
    "import type { Storage } from '../storage/index.js';",
    'export async function count(storage: Storage): Promise<number> {',
    "  return (await storage.db.selectFrom('cards').select('id').execute()).length;",
    '}',
    '',
  ].join('\n'),
  "the transaction's Kysely instance, destructured": [
    "import type { Tx } from '../storage/index.js';",
    'export async function drop(tx: Tx): Promise<void> {',
    '  const { db } = tx;',
    "  await db.deleteFrom('cards').execute();",
    '}',
    '',
  ].join('\n'),
  'compiled SQL run directly': [
    "import type { Queryable } from '../storage/index.js';",
    "export const run = (q: Queryable) => q.executeCompiled('select 1', []);",
    '',
  ].join('\n'),
};

describe('storage boundary lint', () => {
  for (const [what, code] of Object.entries(SNIPPETS)) {
    it(`refuses ${what} outside server/storage/`, async () => {
      for (const file of [
        'server/admin/example.ts',
        'server/cli/example.ts',
        'daemon/example.ts',
        'bench/x.ts',
      ]) {
        const errors = await boundaryErrors(file, code);
        assert.ok(errors.length > 0, `${file}: no boundary error`);
        assert.ok(
          errors.every((m) => m.includes('server/storage/')),
          `${file}: the message names where queries live: ${errors.join('; ')}`,
        );
      }
    });

    it(`allows ${what} inside server/storage/`, async () => {
      assert.deepEqual(await boundaryErrors('server/storage/example.ts', code), []);
    });
  }

  it('allows the storage functions everywhere', async () => {
    const code = [
      "import { findCard, type Storage } from '../storage/index.js';",
      'export const label = async (storage: Storage, id: string) => (await findCard(storage, id))?.label;',
      '',
    ].join('\n');
    assert.deepEqual(await boundaryErrors('server/admin/example.ts', code), []);
  });
});
