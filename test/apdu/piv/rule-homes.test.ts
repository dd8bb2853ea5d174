/**
 * Every PIV constant and rule has one definition in apdu/piv/. These checks read the sources and
 * fail when a twin comes back: a second declaration of a rule, a copied list or check, or a rule
 * imported from a module that only uses it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as memoryCardState from '../../../apdu/piv/memory-card-state.js';
import { REPO_ROOT } from '../../support/pcscd.js';

/** Source trees the rules are used in (tests other than test/support may spell out bytes). */
const SOURCE_DIRS = ['apdu', 'server', 'daemon', 'bench', 'protocol', 'bin', 'test/support'];

interface SourceFile {
  /** Path from the repository root, with `/`. */
  readonly name: string;
  readonly text: string;
}

function sources(): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true })) {
      const rel = `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        if (entry.name !== 'node_modules' && entry.name !== 'build') walk(rel);
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
        out.push({ name: rel, text: fs.readFileSync(path.join(REPO_ROOT, rel), 'utf8') });
      }
    }
  };
  for (const dir of SOURCE_DIRS) walk(dir);
  return out;
}

const SOURCES = sources();

/** The code of a source file, comments removed (a comment may name the bytes a rule is about). */
function codeOf(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"\\])\/\/.*$/gm, '$1');
}

/** Files declaring `name` as a top-level constant or function. */
function declarationsOf(name: string): string[] {
  const declaration = new RegExp(`^export (const|function|async function) ${name}\\b`, 'm');
  const local = new RegExp(`^(const|function) ${name}\\b`, 'm');
  return SOURCES.filter((f) => declaration.test(f.text) || local.test(f.text)).map((f) => f.name);
}

describe('PIV rules have one home in apdu/piv/', () => {
  it('reads the sources it checks', () => {
    assert.ok(SOURCES.length > 100, `only ${SOURCES.length} source files found under ${REPO_ROOT}`);
    assert.ok(SOURCES.some((f) => f.name === 'apdu/piv/constants.ts'));
    assert.ok(SOURCES.some((f) => f.name === 'server/cards/key-store.ts'));
  });

  it('memory-card-state.ts exports its two functions and no constant', () => {
    assert.deepEqual(Object.keys(memoryCardState).sort(), [
      'createMemoryCardState',
      'memoryStateFingerprint',
    ]);
  });

  it('nothing imports anything else from memory-card-state.ts', () => {
    const importFrom = /import\s*(type\s*)?\{([^}]*)\}\s*from\s*'[^']*\/memory-card-state\.js'/g;
    for (const file of SOURCES) {
      for (const m of file.text.matchAll(importFrom)) {
        const names = m[2]!
          .split(',')
          .map((n) => n.trim().replace(/^type\s+/, ''))
          .filter(Boolean);
        for (const n of names) {
          assert.ok(
            ['createMemoryCardState', 'memoryStateFingerprint', 'MemoryCardStateOptions'].includes(n),
            `${file.name} imports ${n} from memory-card-state.ts`,
          );
        }
      }
    }
  });

  const HOMES: Record<string, string> = {
    KEY_REF: 'apdu/piv/constants.ts',
    KEY_SLOTS: 'apdu/piv/constants.ts',
    RETIRED_SLOT_COUNT: 'apdu/piv/constants.ts',
    KEY_ALGORITHMS: 'apdu/piv/constants.ts',
    PIN_POLICIES: 'apdu/piv/constants.ts',
    KEY_ORIGINS: 'apdu/piv/constants.ts',
    VERIFY_P1: 'apdu/piv/constants.ts',
    MANAGEMENT_KEY_BYTES: 'apdu/piv/constants.ts',
    KEY_SIZE_BYTES: 'apdu/piv/constants.ts',
    keySlotTitle: 'apdu/piv/constants.ts',
    defaultPinPolicy: 'apdu/piv/key-policy.ts',
    REFERENCE_DATA_MIN_BYTES: 'apdu/piv/reference-data.ts',
    REFERENCE_DATA_MAX_BYTES: 'apdu/piv/reference-data.ts',
    REFERENCE_DATA_PAD_BYTE: 'apdu/piv/reference-data.ts',
    DEFAULT_RETRY_LIMIT: 'apdu/piv/reference-data.ts',
    MAX_RETRY_LIMIT: 'apdu/piv/reference-data.ts',
    canonicalReferenceValue: 'apdu/piv/reference-data.ts',
    referenceCandidate: 'apdu/piv/reference-data.ts',
    checkKeySlot: 'apdu/piv/card-state-rules.ts',
    checkPinPolicy: 'apdu/piv/card-state-rules.ts',
    importedPrivateKey: 'apdu/piv/card-state-rules.ts',
    MAX_DATA_OBJECT_BYTES: 'apdu/piv/card-state-rules.ts',
    checkDataObjectTag: 'apdu/piv/card-state-rules.ts',
    GUID_BYTES: 'apdu/piv/objects/chuid.ts',
    SW_NO_KEY_IN_SLOT: 'apdu/piv/status-mapping.ts',
  };

  for (const [name, home] of Object.entries(HOMES)) {
    it(`${name} is declared once, in ${home}`, () => {
      assert.deepEqual(declarationsOf(name), [home]);
    });
  }

  it('the old twins are declared nowhere', () => {
    for (const name of [
      'PIV_KEY_SLOTS',
      'REFERENCE_MIN_BYTES',
      'REFERENCE_PAD',
      'REFERENCE_FIELD_BYTES',
      'PIN_REFERENCE',
      'KEY_LENGTHS',
      'ORIGINS',
      'stripPadding',
      'canonicalValue',
      'candidateValue',
      'checkSlot',
      'checkTag',
      'slotTitle',
      'freezeInfo',
    ]) {
      assert.deepEqual(declarationsOf(name), [], `${name} is back`);
    }
  });

  /** Copies of a rule's body, and the one file each may appear in. */
  const COPIES: { readonly what: string; readonly pattern: RegExp; readonly home: string | undefined }[] = [
    {
      what: 'PIN policy list',
      pattern: /\[\s*'never',\s*'once',\s*'always'\s*\]/,
      home: 'apdu/piv/constants.ts',
    },
    {
      what: 'key algorithm list',
      pattern: /'RSA2048',\s*'RSA3072',\s*'ECCP256',\s*'ECCP384'/,
      home: 'apdu/piv/constants.ts',
    },
    { what: 'standard slot list', pattern: /0x9a,\s*0x9c,\s*0x9d,\s*0x9e/i, home: undefined },
    { what: 'retired slot range', pattern: /0x95\s*-\s*0x82|-\s*0x82\s*\+\s*1/i, home: undefined },
    { what: 'PIN padding strip', pattern: /\[end - 1\] === /, home: 'apdu/piv/reference-data.ts' },
    {
      what: 'PKCS#8 import check',
      pattern: /createPrivateKey\(\{\s*key:\s*Buffer\.from\(pkcs8\)/,
      home: 'apdu/piv/card-state-rules.ts',
    },
    { what: 'verification-failed status word', pattern: /0x63c0/i, home: 'apdu/codec/status-words.ts' },
    { what: 'card management key reference', pattern: /=\s*0x9b\b/i, home: undefined },
  ];

  for (const copy of COPIES) {
    it(`the ${copy.what} is written out ${copy.home ? `only in ${copy.home}` : 'nowhere'}`, () => {
      const found = SOURCES.filter((f) => copy.pattern.test(codeOf(f.text))).map((f) => f.name);
      assert.deepEqual(found, copy.home ? [copy.home] : []);
    });
  }

  it('the persistent stores take their rules from apdu/piv/', () => {
    const text = (name: string) => SOURCES.find((f) => f.name === name)!.text;
    // Through apdu/piv's index module (eslint.config.js, APDU_THROUGH_INDEX): the rule's own name.
    const takesFromPiv = (name: string, rule: string) =>
      assert.match(
        text(name),
        new RegExp(`import \\{[^}]*\\b${rule}\\b[^}]*\\} from '\\.\\./\\.\\./apdu/piv/index\\.js'`),
        `${name} takes ${rule} from apdu/piv/`,
      );
    takesFromPiv('server/cards/reference-store.ts', 'referenceCandidate');
    takesFromPiv('server/cards/reference-store.ts', 'canonicalReferenceValue');
    takesFromPiv('server/cards/key-store.ts', 'importedPrivateKey');
    takesFromPiv('server/cards/key-store.ts', 'checkKeySlot');
    takesFromPiv('server/cards/object-store.ts', 'checkDataObjectValue');
    assert.match(text('apdu/piv/memory-card-state.ts'), /from '\.\/card-state-rules\.js'/);
    assert.match(text('apdu/piv/memory-card-state.ts'), /from '\.\/reference-data\.js'/);
  });

  it('apdu/ imports nothing from daemon/ or server/, and server/ nothing from the front card', () => {
    for (const file of SOURCES) {
      if (file.name.startsWith('apdu/')) {
        assert.doesNotMatch(file.text, /from '(\.\.\/)+(daemon|server)\//, file.name);
      }
      if (file.name.startsWith('server/')) assert.doesNotMatch(file.text, /front-card\.js'/, file.name);
    }
  });
});
