/**
 * The per-address socket cap's key: IPv4 as itself, IPv4-mapped IPv6 as the IPv4 address, IPv6
 * by its /64 in every spelling of the same prefix.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sourceAddressKey } from '../../../server/http/source-address.js';

describe('sourceAddressKey', () => {
  it('keeps an IPv4 address as it is', () => {
    assert.equal(sourceAddressKey('192.0.2.7'), '192.0.2.7');
    assert.equal(sourceAddressKey('127.0.0.2'), '127.0.0.2');
  });

  it('counts an IPv4-mapped IPv6 address as the IPv4 address', () => {
    assert.equal(sourceAddressKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(sourceAddressKey('::ffff:c000:207'), '192.0.2.7');
    assert.equal(sourceAddressKey('0:0:0:0:0:ffff:192.0.2.7'), '192.0.2.7');
  });

  it('counts every address of one IPv6 /64 under one key', () => {
    const key = sourceAddressKey('2001:db8:1:2::1');
    assert.equal(key, '2001:db8:1:2::/64');
    for (const same of [
      '2001:db8:1:2:ffff:ffff:ffff:ffff',
      '2001:0db8:0001:0002:0:0:0:9',
      '2001:db8:1:2:a::b',
    ])
      assert.equal(sourceAddressKey(same), key, same);
    assert.notEqual(sourceAddressKey('2001:db8:1:3::1'), key);
  });

  it('reads the short forms: ::, ::1, a zone index and a dotted tail that is not a mapping', () => {
    assert.equal(sourceAddressKey('::'), '0:0:0:0::/64');
    assert.equal(sourceAddressKey('::1'), '0:0:0:0::/64');
    assert.equal(sourceAddressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(sourceAddressKey('2001:db8::192.0.2.1'), '2001:db8:0:0::/64');
  });

  it('gives a socket without an address one key', () => {
    assert.equal(sourceAddressKey(undefined), 'unknown');
  });
});
