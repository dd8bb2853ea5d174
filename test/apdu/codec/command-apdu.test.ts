import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ApduError, encodeCommandApdu, isChained, parseCommandApdu, SW } from '../../../apdu/codec/index.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

describe('parseCommandApdu: the four ISO 7816-4 cases', () => {
  it('case 1: header only', () => {
    const c = parseCommandApdu(hex('00 A4 04 00'));
    assert.deepEqual(
      [c.cla, c.ins, c.p1, c.p2, c.data.length, c.ne, c.extended],
      [0, 0xa4, 4, 0, 0, undefined, false],
    );
  });
  it('case 2 short: Le=00 means 256', () => {
    assert.equal(parseCommandApdu(hex('00 CB 3F FF 00')).ne, 256);
    assert.equal(parseCommandApdu(hex('00 CB 3F FF 08')).ne, 8);
  });
  it('case 3 and 4 short', () => {
    const c3 = parseCommandApdu(hex('00 20 00 80 02 31 32'));
    assert.deepEqual([...c3.data], [0x31, 0x32]);
    assert.equal(c3.ne, undefined);
    const c4 = parseCommandApdu(hex('00 CB 3F FF 05 5C 03 5F C1 02 00'));
    assert.equal(c4.data.length, 5);
    assert.equal(c4.ne, 256);
  });
  it('case 2, 3 and 4 extended', () => {
    const c2 = parseCommandApdu(hex('00 CB 3F FF 00 00 00'));
    assert.deepEqual([c2.ne, c2.extended], [65536, true]);
    const data = new Uint8Array(300).fill(7);
    const c3 = parseCommandApdu(Uint8Array.from([0, 0xdb, 0x3f, 0xff, 0, 0x01, 0x2c, ...data]));
    assert.equal(c3.data.length, 300);
    assert.equal(c3.ne, undefined);
    const c4 = parseCommandApdu(Uint8Array.from([0, 0x87, 7, 0x9a, 0, 0x01, 0x2c, ...data, 0x01, 0x00]));
    assert.deepEqual([c4.data.length, c4.ne, c4.extended], [300, 256, true]);
  });
  it('refuses lengths that match no case with 6700', () => {
    for (const bad of [
      '00',
      '00 A4 04',
      '00 20 00 80 05 31 32',
      '00 20 00 80 02 31 32 00 00',
      '00 CB 3F FF 00 00',
      '00 DB 3F FF 00 00 00 01',
    ]) {
      assert.throws(
        () => parseCommandApdu(hex(bad)),
        (e: unknown) => e instanceof ApduError && e.sw === SW.WRONG_LENGTH,
        bad,
      );
    }
  });
  it('detects the chaining bit only on interindustry classes', () => {
    assert.equal(isChained(parseCommandApdu(hex('10 87 07 9A 01 00'))), true);
    assert.equal(isChained(parseCommandApdu(hex('00 87 07 9A 01 00'))), false);
    assert.equal(isChained(parseCommandApdu(hex('90 87 07 9A 01 00'))), false);
  });
});

describe('encodeCommandApdu', () => {
  it('round-trips any command through parse', () => {
    fc.assert(
      fc.property(
        fc.record({
          cla: fc.integer({ min: 0, max: 255 }),
          ins: fc.integer({ min: 0, max: 255 }),
          p1: fc.integer({ min: 0, max: 255 }),
          p2: fc.integer({ min: 0, max: 255 }),
          data: fc.uint8Array({ maxLength: 600 }),
          ne: fc.option(fc.integer({ min: 1, max: 65536 }), { nil: undefined }),
          extended: fc.boolean(),
        }),
        (cmd) => {
          const parsed = parseCommandApdu(encodeCommandApdu(cmd));
          assert.deepEqual([...parsed.data], [...cmd.data]);
          assert.equal(parsed.ne, cmd.ne);
          assert.deepEqual(
            [parsed.cla, parsed.ins, parsed.p1, parsed.p2],
            [cmd.cla, cmd.ins, cmd.p1, cmd.p2],
          );
        },
      ),
      { numRuns: 2000 },
    );
  });
  it('uses short form when it fits', () => {
    assert.deepEqual(
      [...encodeCommandApdu({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff, ne: 256 })],
      [0, 0xcb, 0x3f, 0xff, 0],
    );
  });
});

describe('parseCommandApdu on arbitrary bytes', () => {
  it('either parses or throws ApduError with a status word, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        try {
          const c = parseCommandApdu(bytes);
          assert.ok(c.data.length <= bytes.length);
        } catch (e) {
          assert.ok(e instanceof ApduError, String(e));
          assert.equal(e.sw, SW.WRONG_LENGTH);
        }
      }),
      { numRuns: 20000 },
    );
  });
});
