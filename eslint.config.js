import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Why the storage boundary rules below refuse something (shown with each lint error). */
const STORAGE_ONLY =
  'Database access lives in server/storage/ (one home for every query): call a storage function.';

/** Product code outside server/storage/. Tests are not in it: they read and tamper with rows directly. */
const PRODUCT_CODE = ['server/**', 'daemon/**', 'apdu/**', 'protocol/**', 'demo/**', 'bin/**', 'bench/**'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    // Every database query lives in server/storage/: nothing else imports the query builder or a
    // driver, builds SQL, or reaches for the storage's Kysely instance (`storage.db`, `tx.db`).
    files: PRODUCT_CODE,
    ignores: ['server/storage/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'kysely', message: STORAGE_ONLY },
            { name: 'pg', message: STORAGE_ONLY },
            { name: 'better-sqlite3', message: STORAGE_ONLY },
          ],
          patterns: [{ group: ['**/storage/compiled-query.js'], message: STORAGE_ONLY }],
        },
      ],
      'no-restricted-syntax': [
        'error',
        { selector: "MemberExpression[property.name='db']", message: STORAGE_ONLY },
        { selector: "ObjectPattern > Property[key.name='db']", message: STORAGE_ONLY },
        { selector: "MemberExpression[property.name='executeCompiled']", message: STORAGE_ONLY },
        {
          selector:
            'MemberExpression[property.name=/^(selectFrom|selectNoFrom|insertInto|replaceInto|updateTable|deleteFrom|mergeInto)$/]',
          message: STORAGE_ONLY,
        },
        { selector: "TaggedTemplateExpression[tag.name='sql']", message: STORAGE_ONLY },
      ],
    },
  },
);
