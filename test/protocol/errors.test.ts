/**
 * Every error code is documented where a user looks it up: docs/cli.md lists each code of
 * protocol/errors.ts with the exit status `exitCodeFor` gives it, and the exit-status table names
 * every code that has a status other than 1 in that status's row. A code added without its line
 * fails here.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CardlinkError, exitCodeFor, type CardlinkErrorCode } from '../../protocol/errors.js';
import { REPO_ROOT } from '../support/pcscd.js';

/** The codes of the CardlinkErrorCode union, read from its source (types leave nothing at run time). */
function declaredCodes(): CardlinkErrorCode[] {
  const source = fs.readFileSync(path.join(REPO_ROOT, 'protocol', 'errors.ts'), 'utf8');
  const union = /export type CardlinkErrorCode =([^;]*);/.exec(source)?.[1];
  assert.ok(union, 'the CardlinkErrorCode union in protocol/errors.ts');
  return [...union.matchAll(/\|\s*'(ERR_[A-Z0-9_]+)'/g)].map((m) => m[1] as CardlinkErrorCode);
}

const cliDoc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'cli.md'), 'utf8');

/** Rows of the Markdown table that starts with `header`, as trimmed cells. */
function tableRows(header: string): string[][] {
  const at = cliDoc.indexOf(header);
  assert.ok(at >= 0, `docs/cli.md has a table headed ${header}`);
  const rows: string[][] = [];
  for (const line of cliDoc.slice(at).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
  }
  return rows;
}

describe('error codes in docs/cli.md', () => {
  const codes = declaredCodes();

  it('reads the codes of protocol/errors.ts', () => {
    assert.ok(codes.length >= 60, `${codes.length} codes`);
    assert.equal(new Set(codes).size, codes.length, 'no code twice');
    for (const code of ['ERR_USAGE', 'ERR_TOKEN_STORE_UNAVAILABLE', 'ERR_PORT_IN_USE', 'ERR_INTERNAL'])
      assert.ok(codes.includes(code as CardlinkErrorCode), code);
    // The union and the class agree: each code makes an error that keeps it.
    for (const code of codes) assert.equal(new CardlinkError(code, 'x').code, code);
  });

  it('"Every error code" lists each code once, with the exit status the CLI gives it', () => {
    const rows = tableRows('| code | exit | meaning |');
    const listed = new Map<string, number>();
    for (const [code = '', exit = '', meaning = ''] of rows) {
      const name = /^`(ERR_[A-Z0-9_]+)`$/.exec(code)?.[1];
      assert.ok(name, `a code cell: ${code}`);
      assert.ok(!listed.has(name), `${name} listed twice`);
      assert.ok(meaning.length > 10, `${name} says what it means`);
      listed.set(name, Number(exit));
    }
    for (const code of codes) {
      assert.ok(listed.has(code), `${code} is not in docs/cli.md's "Every error code"`);
      assert.equal(listed.get(code), exitCodeFor(code), `${code}'s exit status`);
    }
    assert.deepEqual(
      [...listed.keys()].filter((c) => !codes.includes(c as CardlinkErrorCode)),
      [],
      'no code that protocol/errors.ts does not have',
    );
  });

  it('the exit-status table names every code whose status is not 1, in its row', () => {
    const rows = tableRows('| exit status | when | code |');
    const byStatus = new Map(
      rows.map(([exit = '', , cell = '']) => [
        Number(exit),
        [...cell.matchAll(/`(ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]!).sort(),
      ]),
    );
    const expected = new Map<number, string[]>();
    for (const code of codes) {
      const status = exitCodeFor(code);
      if (status !== 1) expected.set(status, [...(expected.get(status) ?? []), code].sort());
    }
    for (const [status, named] of expected)
      assert.deepEqual(byStatus.get(status), named, `the row for exit status ${status}`);
    assert.ok(byStatus.has(0) && byStatus.has(1));
  });
});
