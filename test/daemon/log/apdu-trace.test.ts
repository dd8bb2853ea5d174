import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { describeApdu, MAX_TRACED_DATA_BYTES, type ApduTrace } from '../../../daemon/log/apdu-trace.js';

const bytes = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
/** VERIFY PIN '123456' padded with FF to 8 bytes. */
const VERIFY_123456 = bytes('00 20 00 80 08 313233343536FFFF');
const OK = bytes('9000');

function full(t: ReturnType<typeof describeApdu>): ApduTrace {
  assert.ok(!('malformed' in t), `unexpectedly malformed: ${JSON.stringify(t)}`);
  return t as ApduTrace;
}

/** Asserts the serialized trace contains none of the `secret` bytes, neither as hex nor as text. */
function assertHidden(trace: unknown, secret: Uint8Array): void {
  const text = JSON.stringify(trace);
  const secretHex = Buffer.from(secret).toString('hex');
  assert.ok(!text.toLowerCase().includes(secretHex), `hex of the secret in ${text}`);
  const ascii = Buffer.from(secret).toString('latin1');
  if (/^[\x20-\x7e]{4,}$/.test(ascii)) assert.ok(!text.includes(ascii), `ascii of the secret in ${text}`);
}

describe('describeApdu', () => {
  it('masks the PIN of VERIFY and keeps the header and lengths', () => {
    const t = full(describeApdu(VERIFY_123456, bytes('63C2')));
    assert.deepEqual(t, {
      cla: '00',
      ins: '20',
      p1: '00',
      p2: '80',
      lc: 8,
      data: '[masked 8 bytes]',
      sw: '63C2',
      responseData: '',
    });
    assertHidden(t, bytes('313233343536'));
    assert.ok(!JSON.stringify(t).includes('123456'));
  });

  it('masks CHANGE REFERENCE DATA, RESET RETRY COUNTER, IMPORT KEY and SET MANAGEMENT KEY data', () => {
    const secret = bytes('3132333435363738 3837363534333231');
    for (const [ins, p1, p2] of [
      [0x24, 0x00, 0x80],
      [0x2c, 0x00, 0x80],
      [0xfe, 0x11, 0x9a],
      [0xff, 0xff, 0xff],
    ] as const) {
      const cmd = Uint8Array.from([0x00, ins, p1, p2, secret.length, ...secret]);
      const t = full(describeApdu(cmd, OK));
      assert.equal(t.data, `[masked ${secret.length} bytes]`);
      assert.equal(t.sw, '9000');
      assertHidden(t, secret);
    }
  });

  it('masks GENERAL AUTHENTICATE data and response, including chained parts', () => {
    const digest = bytes('7C 22 82 00 81 20' + 'AB'.repeat(32));
    const signature = bytes('7C 4A 82 48' + 'CD'.repeat(72));
    const t = full(
      describeApdu(
        Uint8Array.from([0x00, 0x87, 0x11, 0x9a, digest.length, ...digest]),
        Uint8Array.from([...signature, 0x90, 0x00]),
      ),
    );
    assert.equal(t.data, `[masked ${digest.length} bytes]`);
    assert.equal(t.responseData, `[masked ${signature.length} bytes]`);
    assert.equal(t.sw, '9000');
    assertHidden(t, bytes('AB'.repeat(32)));
    assertHidden(t, bytes('CD'.repeat(72)));

    const part = full(describeApdu(Uint8Array.from([0x10, 0x87, 0x07, 0x9a, 4, 1, 2, 3, 4]), OK));
    assert.equal(part.chained, true);
    assert.equal(part.data, '[masked 4 bytes]');
  });

  it('masks GET RESPONSE answers (continuations of masked answers)', () => {
    const t = full(describeApdu(bytes('00C0000000'), bytes('DEADBEEFCAFE 9000')));
    assert.equal(t.responseData, '[masked 6 bytes]');
    assert.equal(t.ne, 256);
  });

  it('shows SELECT data and response', () => {
    const t = full(describeApdu(bytes('00A4040009 A00000030800001000'), bytes('61114F0600001000 9000')));
    assert.equal(t.data, 'A00000030800001000');
    assert.equal(t.lc, 9);
    assert.equal(t.responseData, '61114F0600001000');
    assert.equal(t.sw, '9000');
    assert.equal(t.chained, undefined);
  });

  it('shows GET DATA and PUT DATA of public containers and masks PIN-protected ones', () => {
    const cert = full(describeApdu(bytes('00CB3FFF05 5C035FC105 00'), bytes('5303700100 9000')));
    assert.equal(cert.data, '5C035FC105');
    assert.equal(cert.responseData, '5303700100');

    // Printed Information (5FC109): PIN-protected; ykman keeps a protected management key there.
    const mgmt = bytes('88 1A 89 18' + '01'.repeat(24));
    const printed = full(
      describeApdu(
        bytes('00CB3FFF05 5C035FC109 00'),
        Uint8Array.from([0x53, mgmt.length, ...mgmt, 0x90, 0x00]),
      ),
    );
    assert.equal(printed.data, '5C035FC109');
    assert.equal(printed.responseData, `[masked ${mgmt.length + 2} bytes]`);

    const putPublic = full(describeApdu(bytes('00DB3FFF0A 5C035FC102 5303010203'), OK));
    assert.equal(putPublic.data, '5C035FC1025303010203');
    const putPrinted = Uint8Array.from([
      0x00,
      0xdb,
      0x3f,
      0xff,
      7 + mgmt.length,
      ...bytes('5C035FC109'),
      0x53,
      mgmt.length,
      ...mgmt,
    ]);
    const t = full(describeApdu(putPrinted, OK));
    assert.equal(t.data, `[masked ${7 + mgmt.length} bytes]`);
    assertHidden(t, mgmt);
    // A continuation part of a chained PUT DATA names no container.
    assert.equal(full(describeApdu(bytes('00DB3FFF03 010203'), OK)).data, '[masked 3 bytes]');
  });

  it('caps long data fields', () => {
    const data = new Uint8Array(1000).fill(0x41);
    const t = full(describeApdu(Uint8Array.from([0x00, 0xa4, 0x04, 0x00, 0x00, 0x03, 0xe8, ...data])));
    assert.equal(t.lc, 1000);
    assert.equal(t.data, '41'.repeat(MAX_TRACED_DATA_BYTES) + '...(1000 bytes)');
    assert.equal(t.sw, undefined);
    assert.equal(t.responseData, undefined);
  });

  it('reports malformed commands by length only and never throws', () => {
    assert.deepEqual(describeApdu(bytes('0020')), { malformed: true, length: 2 });
    assert.deepEqual(describeApdu(new Uint8Array(0)), { malformed: true, length: 0 });
    // Lc says 8, only 6 bytes follow: the PIN digits must not show.
    const truncated = bytes('0020008008 313233343536');
    assert.deepEqual(describeApdu(truncated, bytes('6700')), { malformed: true, length: 11, sw: '6700' });
    const odd = full(describeApdu(bytes('00A4040000'), bytes('90')));
    assert.equal(odd.responseData, '[malformed 1 bytes]');
    assert.equal(odd.sw, undefined);
    assert.deepEqual(describeApdu(undefined as unknown as Uint8Array), { malformed: true, length: 0 });
    assert.deepEqual(describeApdu(null as unknown as Uint8Array, null as unknown as Uint8Array), {
      malformed: true,
      length: 0,
    });
  });
});
