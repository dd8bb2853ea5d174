/** The card's answers to a PIN change or unblock, in words and as exit statuses (one wording for the CLI and the PIN page). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { pinOperationOutcome } from '../../../apdu/piv/index.js';
import {
  describePinResult,
  describeSetPinResult,
  pinExitStatus,
  setPinExitStatus,
} from '../../../daemon/cli/pin-words.js';
import { exitCodeFor } from '../../../protocol/errors.js';
import { MAX_SECRET_LINE_BYTES, readSecrets } from '../../../daemon/cli/secret-input.js';

describe('PIN answers in words', () => {
  it('names the tries left, the blocked reference, and the rule for a new PIN', () => {
    const cases: [Parameters<typeof describePinResult>, string, boolean, number][] = [
      [['change', { outcome: 'done' }], 'Done: the PIN is changed.', true, 0],
      [['unblock', { outcome: 'done' }], 'Done: the PIN is unblocked and set to the new PIN.', true, 0],
      [
        ['change', pinOperationOutcome('change', 0x63c2)],
        'Wrong current PIN: 2 tries left before the PIN is blocked. Nothing was changed.',
        false,
        2,
      ],
      [
        ['unblock', pinOperationOutcome('unblock', 0x63c1)],
        'Wrong PUK: 1 try left before the PUK is blocked. Nothing was changed.',
        false,
        2,
      ],
      [
        ['change', pinOperationOutcome('change', 0x6983)],
        'The PIN is blocked. Unblock it with the PUK (Unblock PIN).',
        false,
        3,
      ],
      [
        ['unblock', pinOperationOutcome('unblock', 0x6983)],
        'The PUK is blocked: the PIN cannot be unblocked any more. Ask your administrator for a new card.',
        false,
        3,
      ],
      [
        ['change', { outcome: 'new-pin-invalid', minLength: 6, maxLength: 8 }],
        'The new PIN must be 6 to 8 digits. Nothing was changed.',
        false,
        65,
      ],
      [
        ['unblock', { outcome: 'value-invalid', reference: 'puk' }],
        "The card refused the new PIN: it breaks your organisation's PIN policy (no simple sequences like 123456 or 111111, not one of your recent PINs, the allowed length), or the PUK is not 6 to 8 characters. Nothing was changed.",
        false,
        65,
      ],
      [
        ['change', pinOperationOutcome('change', 0x6f00)],
        'The card refused (status 6F00). Nothing was changed.',
        false,
        1,
      ],
    ];
    for (const [args, text, ok, exit] of cases) {
      assert.deepEqual(describePinResult(...args), { ok, text });
      assert.equal(pinExitStatus(args[1]), exit, text);
    }
  });
});

describe('secrets from stdin (not a terminal)', () => {
  const read = (input: string | Buffer, count = 2) => {
    const stream = new PassThrough() as PassThrough & NodeJS.ReadStream;
    const done = readSecrets(
      Array.from({ length: count }, (_, i) => `secret ${i}: `),
      { input: stream, prompts: new PassThrough() },
    );
    stream.end(input);
    return done;
  };

  it('one per line; CR LF and a missing last LF are fine; later lines are not read', async () => {
    assert.deepEqual(await read('123456\n654321\n'), ['123456', '654321']);
    assert.deepEqual(await read('123456\r\n654321'), ['123456', '654321']);
    assert.deepEqual(await read('123456\n654321\nextra\n'), ['123456', '654321']);
  });

  it('too few lines, or a line over the limit, is a usage error naming no value', async () => {
    await assert.rejects(read('123456\n'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ERR_USAGE');
      assert.match(e.message, /stdin ended after 1 of 2 lines/);
      assert.doesNotMatch(e.message, /123456/);
      return true;
    });
    await assert.rejects(read(`${'7'.repeat(MAX_SECRET_LINE_BYTES + 1)}\n1\n`), /longer than/);
  });
});

describe('cardlink pin set answers', () => {
  it('exit as the error codes of the same refusal: 0 done, 77 not fresh or not allowed, 65 policy', () => {
    assert.equal(setPinExitStatus({ outcome: 'done', kind: 'first' }), 0);
    assert.equal(setPinExitStatus({ outcome: 'sign-in-not-fresh' }), exitCodeFor('ERR_SIGN_IN_NOT_FRESH'));
    assert.equal(setPinExitStatus({ outcome: 'not-allowed' }), exitCodeFor('ERR_PIN_SET_NOT_ALLOWED'));
    assert.equal(setPinExitStatus({ outcome: 'policy', refusal: 'trivial' }), exitCodeFor('ERR_PIN_POLICY'));
    assert.equal(describeSetPinResult({ outcome: 'not-allowed' }).ok, false);
  });
});
