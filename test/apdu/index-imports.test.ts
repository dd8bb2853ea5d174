/**
 * Outside apdu/, its folders are used through their index modules (eslint.config.js,
 * APDU_THROUGH_INDEX): checked here with the project's real ESLint configuration on typical imports.
 * apdu/ itself, and the tests of its internals under test/apdu/, may import its files directly.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

/** The repository root, from dist/test/apdu/. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const eslint = new ESLint({ cwd: ROOT });

async function restrictedImports(file: string, code: string): Promise<number> {
  const [result] = await eslint.lintText(code, { filePath: file });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-imports').length;
}

const use = (from: string, name: string) => `import { ${name} } from '${from}';\nexport const x = ${name};\n`;

describe('apdu/ is imported through its index modules', () => {
  it('refuses a file of apdu/piv, apdu/codec or a subfolder from daemon, server, bench and tests', async () => {
    assert.equal(await restrictedImports('daemon/x.ts', use('../apdu/piv/constants.js', 'KEY_REF')), 1);
    assert.equal(
      await restrictedImports('server/cards/x.ts', use('../../apdu/codec/ber-tlv.js', 'encodeTlv')),
      1,
    );
    assert.equal(
      await restrictedImports('bench/x.ts', use('../apdu/piv/objects/catalogue.js', 'OBJECT_TAG')),
      1,
    );
    assert.equal(
      await restrictedImports('test/server/x.test.ts', use('../../apdu/piv/snapshot.js', 'buildSnapshot')),
      1,
    );
  });

  it('allows the index modules, and direct imports inside apdu/ and its own tests', async () => {
    assert.equal(await restrictedImports('daemon/x.ts', use('../apdu/piv/index.js', 'KEY_REF')), 0);
    assert.equal(
      await restrictedImports('server/x.ts', use('../apdu/piv/objects/index.js', 'OBJECT_TAG')),
      0,
    );
    assert.equal(await restrictedImports('apdu/piv/x.ts', use('./constants.js', 'KEY_REF')), 0);
    assert.equal(
      await restrictedImports(
        'test/apdu/piv/x.test.ts',
        use('../../../apdu/piv/snapshot.js', 'buildSnapshot'),
      ),
      0,
    );
  });
});
