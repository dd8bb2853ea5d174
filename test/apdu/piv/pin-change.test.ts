/**
 * The holder's PIN operations (apdu/piv/pin-change.ts) against a real PivCard on the memory state:
 * the commands they build are the ones the card takes, and each answer the card gives maps to the
 * outcome the daemon reports (done, wrong with tries left, blocked, new PIN outside the rule).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SW } from '../../../apdu/codec/index.js';
import {
  isValidNewPin,
  pinOperationCommand,
  pinOperationOutcome,
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
  type PinChangeOutcome,
  type PinOperation,
} from '../../../apdu/piv/index.js';
import { newTestCard, swHex, type Host } from './support/host.js';

const PIN = '246813'; // TEST_PIN of support/host.ts
const PUK = '97531864'; // TEST_PUK

/** Builds the command, sends it to the card, and maps the card's answer, as the daemon does. */
async function run(host: Host, op: PinOperation, proof: string, newPin: string): Promise<PinChangeOutcome> {
  const built = pinOperationCommand(op, proof, newPin);
  if ('outcome' in built) return built.outcome;
  const reply = await host.raw(built.command);
  return pinOperationOutcome(op, reply.sw);
}

describe('PIN change and unblock from the holder side', () => {
  it('builds CHANGE REFERENCE DATA and RESET RETRY COUNTER for the PIN, values padded with FF', () => {
    const change = pinOperationCommand('change', PIN, '13572468');
    assert.ok('command' in change);
    assert.equal(
      Buffer.from(change.command).toString('hex'),
      `0024008010${Buffer.from(PIN).toString('hex')}ffff${Buffer.from('13572468').toString('hex')}`,
    );
    const unblock = pinOperationCommand('unblock', PUK, '135724');
    assert.ok('command' in unblock);
    assert.equal(
      Buffer.from(unblock.command).toString('hex'),
      `002c008010${Buffer.from(PUK).toString('hex')}${Buffer.from('135724').toString('hex')}ffff`,
    );
  });

  it('a new PIN must be 6 to 8 digits; nothing is built otherwise', () => {
    for (const bad of ['12345', '123456789', '12345a', '１２３４５６', '123 456', ''])
      assert.equal(isValidNewPin(bad), false, bad);
    for (const good of ['123456', '1234567', '12345678']) assert.equal(isValidNewPin(good), true, good);
    assert.deepEqual(pinOperationCommand('change', PIN, '12345'), {
      outcome: {
        outcome: 'new-pin-invalid',
        minLength: REFERENCE_DATA_MIN_BYTES,
        maxLength: REFERENCE_DATA_MAX_BYTES,
      },
    });
  });

  it('a current PIN or PUK that cannot be one (not 6..8 bytes) is refused before the card', () => {
    assert.deepEqual(pinOperationCommand('change', '12345', '654321'), {
      outcome: { outcome: 'value-invalid', reference: 'pin' },
    });
    assert.deepEqual(pinOperationCommand('unblock', '123456789', '654321'), {
      outcome: { outcome: 'value-invalid', reference: 'puk' },
    });
    // Eight characters but more than eight bytes of UTF-8.
    assert.deepEqual(pinOperationCommand('change', '1234567é', '654321'), {
      outcome: { outcome: 'value-invalid', reference: 'pin' },
    });
  });

  it('change: done, then the new PIN verifies and the old does not', async () => {
    const { host } = await newTestCard();
    assert.deepEqual(await run(host, 'change', PIN, '13572468'), { outcome: 'done' });
    assert.equal(swHex((await host.verifyPin(new TextEncoder().encode('13572468'))).sw), '9000');
    assert.equal(swHex((await host.verifyPin()).sw), '63C2');
  });

  it('change with a wrong PIN: tries left, then blocked; a blocked PIN stays blocked', async () => {
    const { host } = await newTestCard();
    assert.deepEqual(await run(host, 'change', '000000', '13572468'), {
      outcome: 'wrong',
      reference: 'pin',
      triesLeft: 2,
    });
    assert.deepEqual(await run(host, 'change', '000000', '13572468'), {
      outcome: 'wrong',
      reference: 'pin',
      triesLeft: 1,
    });
    assert.deepEqual(await run(host, 'change', '000000', '13572468'), {
      outcome: 'blocked',
      reference: 'pin',
    });
    assert.deepEqual(await run(host, 'change', PIN, '13572468'), { outcome: 'blocked', reference: 'pin' });
  });

  it('unblock: a wrong PUK counts down; the right one sets the new PIN; a blocked PUK is said so', async () => {
    const { host } = await newTestCard();
    for (let i = 0; i < 3; i++) await run(host, 'change', '000000', '13572468');
    assert.deepEqual(await run(host, 'unblock', '00000000', '135724'), {
      outcome: 'wrong',
      reference: 'puk',
      triesLeft: 2,
    });
    assert.deepEqual(await run(host, 'unblock', PUK, '135724'), { outcome: 'done' });
    assert.equal(swHex((await host.verifyPin(new TextEncoder().encode('135724'))).sw), '9000');
    for (let i = 0; i < 3; i++) await run(host, 'unblock', '00000000', '135724');
    assert.deepEqual(await run(host, 'unblock', PUK, '135724'), { outcome: 'blocked', reference: 'puk' });
  });

  it('maps the status words it does not expect to refused, 6A80 to a value the card cannot take', () => {
    assert.deepEqual(pinOperationOutcome('change', SW.INCORRECT_DATA), {
      outcome: 'value-invalid',
      reference: 'pin',
    });
    assert.deepEqual(pinOperationOutcome('unblock', SW.VERIFY_FAILED_00), {
      outcome: 'blocked',
      reference: 'puk',
    });
    assert.deepEqual(pinOperationOutcome('change', SW.NO_PRECISE_DIAGNOSIS), {
      outcome: 'refused',
      statusWord: SW.NO_PRECISE_DIAGNOSIS,
    });
  });
});
