import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApduError,
  CommandChainAssembler,
  parseCommandApdu,
  parseResponseApdu,
  ResponseChainer,
  SW,
  MAX_CHAINED_COMMAND_BYTES,
} from '../../../apdu/codec/index.js';

const cmd = (cla: number, data: number[], le?: number) =>
  parseCommandApdu(
    Uint8Array.from([cla, 0x87, 0x07, 0x9a, data.length, ...data, ...(le === undefined ? [] : [le])]),
  );

describe('CommandChainAssembler', () => {
  it('assembles CLA 10 parts into one command with the final part’s Le', () => {
    const a = new CommandChainAssembler();
    assert.deepEqual(a.feed(cmd(0x10, [1, 2])), { done: false });
    assert.deepEqual(a.feed(cmd(0x10, [3])), { done: false });
    const r = a.feed(cmd(0x00, [4], 0));
    assert.ok(r.done);
    assert.deepEqual([...r.command.data], [1, 2, 3, 4]);
    assert.equal(r.command.cla, 0);
    assert.equal(r.command.ne, 256);
    assert.equal(a.active, false);
  });
  it('aborts with 6883 when another command interrupts the chain', () => {
    const a = new CommandChainAssembler();
    a.feed(cmd(0x10, [1]));
    assert.throws(
      () => a.feed(parseCommandApdu(Uint8Array.from([0, 0xcb, 0x3f, 0xff, 0]))),
      (e: unknown) => e instanceof ApduError && e.sw === SW.LAST_COMMAND_OF_CHAIN_EXPECTED,
    );
    assert.equal(a.active, false);
  });
  it('drops a chain that grows past the limit with 6700', () => {
    const a = new CommandChainAssembler();
    const part = new Array(255).fill(0);
    assert.throws(
      () => {
        for (let i = 0; i * 255 <= MAX_CHAINED_COMMAND_BYTES; i++) a.feed(cmd(0x10, part));
      },
      (e: unknown) => e instanceof ApduError && e.sw === SW.WRONG_LENGTH,
    );
    assert.equal(a.active, false);
  });
});

describe('ResponseChainer', () => {
  it('honours Le and hands out the rest with 61xx and GET RESPONSE', () => {
    const body = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
    const c = new ResponseChainer();
    const first = parseResponseApdu(c.respond(body, SW.OK, 8));
    assert.equal(first.data.length, 8);
    assert.equal(first.sw, 0x6100); // 592 bytes left: 256 or more
    const got: number[] = [...first.data];
    let sw = first.sw;
    while ((sw & 0xff00) === 0x6100) {
      const r = parseResponseApdu(
        c.getResponse(parseCommandApdu(Uint8Array.from([0, 0xc0, 0, 0, sw & 0xff]))),
      );
      got.push(...r.data);
      sw = r.sw;
    }
    assert.equal(sw, SW.OK);
    assert.deepEqual(got, [...body]);
  });
  it('answers GET RESPONSE with nothing pending by 6985', () => {
    const c = new ResponseChainer();
    assert.throws(
      () => c.getResponse(parseCommandApdu(Uint8Array.from([0, 0xc0, 0, 0, 0]))),
      (e: unknown) => e instanceof ApduError && e.sw === SW.CONDITIONS_NOT_SATISFIED,
    );
  });
  it('returns everything at once under an extended Le', () => {
    const c = new ResponseChainer();
    const r = parseResponseApdu(c.respond(new Uint8Array(3000), SW.OK, 65536));
    assert.equal(r.data.length, 3000);
    assert.equal(c.active, false);
  });
});
