import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  encodeLength,
  encodeTlv,
  parseTlvList,
  parseTlvTree,
  TlvError,
  MAX_TLV_DEPTH,
} from '../../../apdu/codec/index.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

describe('BER-TLV', () => {
  it('parses one-, two- and three-byte tags and long lengths', () => {
    const list = parseTlvList(hex('5C 03 5F C1 05  7E 00  53 81 80' + '00'.repeat(128)));
    assert.deepEqual(
      list.map((t) => [t.tag, t.value.length]),
      [
        [0x5c, 3],
        [0x7e, 0],
        [0x53, 128],
      ],
    );
    assert.equal(parseTlvList(hex('5F C1 05 01 AA'))[0]!.tag, 0x5fc105);
    assert.equal(parseTlvList(hex('7F 49 00'))[0]!.tag, 0x7f49);
  });
  it('parses nested templates', () => {
    const tree = parseTlvTree(hex('7C 06 82 00 81 02 01 02'));
    assert.equal(tree[0]!.children.length, 2);
    assert.deepEqual([...tree[0]!.children[1]!.value], [1, 2]);
  });
  it('refuses indefinite length, overlong length fields and lengths past the end', () => {
    for (const bad of [
      '53 80 00 00',
      '53 84 00 00 00 01 00',
      '53 05 01 02',
      '53 82 01',
      '5F',
      '5F C1',
      '1F 81 81 81 01 00',
      '00 00',
    ]) {
      assert.throws(() => parseTlvList(hex(bad)), TlvError, bad);
    }
  });
  it('bounds nesting depth', () => {
    let v: Uint8Array = hex('80 00');
    for (let i = 0; i <= MAX_TLV_DEPTH + 1; i++) v = encodeTlv(0x7c, v);
    assert.throws(() => parseTlvTree(v), TlvError);
  });
  it('encodes minimal lengths', () => {
    assert.deepEqual([...encodeLength(0x7f)], [0x7f]);
    assert.deepEqual([...encodeLength(0x80)], [0x81, 0x80]);
    assert.deepEqual([...encodeLength(0x100)], [0x82, 1, 0]);
    assert.deepEqual([...encodeLength(0x10000)], [0x83, 1, 0, 0]);
  });
  it('round-trips and never reads past the buffer on random input', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0x53, 0x5c, 0x7f49, 0x5fc105),
        fc.uint8Array({ maxLength: 70000 / 64 }),
        (tag, value) => {
          const [t] = parseTlvList(encodeTlv(tag, value));
          assert.equal(t!.tag, tag);
          assert.deepEqual([...t!.value], [...value]);
        },
      ),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          for (const t of parseTlvTree(bytes)) assert.ok(t.value.length <= bytes.length);
        } catch (e) {
          assert.ok(e instanceof TlvError, String(e));
        }
      }),
      { numRuns: 20000 },
    );
  });
});
