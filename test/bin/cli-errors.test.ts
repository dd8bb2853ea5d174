/** Which command lines ask for JSON errors: the last --json / --no-json before `--`, as yargs reads them. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { jsonRequested } from '../../bin/cli-errors.js';

describe('jsonRequested', () => {
  const cases: [string[], boolean][] = [
    [[], false],
    [['status'], false],
    [['status', '--json'], true],
    [['admin', '--json', 'list-cards'], true],
    [['status', '--json=true'], true],
    [['status', '--json=false'], false],
    [['status', '--json', 'false'], false],
    [['status', '--json', 'true'], true],
    [['status', '--json', '--no-json'], false],
    [['status', '--no-json', '--json'], true],
    [['admin', 'audit', '--card', '--json'], true],
    [['status', '--', '--json'], false],
    [['status', '--jsonx'], false],
  ];
  for (const [argv, expected] of cases) {
    it(`${JSON.stringify(argv)} -> ${expected}`, () => assert.equal(jsonRequested(argv), expected));
  }
});
