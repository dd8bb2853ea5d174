import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Why the storage boundary rules below refuse something (shown with each lint error). */
const STORAGE_ONLY =
  'Database access lives in server/storage/ (one home for every query): call a storage function.';

/** Product code outside server/storage/. Tests are not in it: they read and tamper with rows directly. */
const PRODUCT_CODE = ['server/**', 'daemon/**', 'apdu/**', 'protocol/**', 'demo/**', 'bin/**', 'bench/**'];

/**
 * Outside apdu/ (and its own tests), apdu/ is used through its folders' index modules
 * (apdu/codec/index.js, apdu/piv/index.js, apdu/piv/objects/index.js, ...): what a folder exports
 * is its interface, and a file can move inside it without touching its users.
 */
const APDU_THROUGH_INDEX = {
  // test/apdu/**/support/ holds test helpers, not the product's apdu/.
  regex: '(^|/)apdu/(?!(.+/)?support/)(.+/)?(?!index\\.js$)[^/]+$',
  message: "Import apdu/ through its folder's index module (apdu/piv/index.js, apdu/codec/index.js, ...).",
};
const STORAGE_PATHS = [
  { name: 'kysely', message: STORAGE_ONLY },
  { name: 'pg', message: STORAGE_ONLY },
  { name: 'better-sqlite3', message: STORAGE_ONLY },
];
const COMPILED_QUERY = { group: ['**/storage/compiled-query.js'], message: STORAGE_ONLY };

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
        { paths: STORAGE_PATHS, patterns: [COMPILED_QUERY, APDU_THROUGH_INDEX] },
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
  {
    // apdu/ itself imports its own files directly.
    files: ['apdu/**'],
    rules: {
      'no-restricted-imports': ['error', { paths: STORAGE_PATHS, patterns: [COMPILED_QUERY] }],
    },
  },
  {
    files: ['server/storage/**', 'test/**', 'fuzz/**', 'tray/**'],
    ignores: ['test/apdu/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [APDU_THROUGH_INDEX] }] },
  },
);
