import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import {
  canonicalServerUrl,
  DEVICE_PROOF_LABEL,
  deviceProofTranscript,
  secretHash,
  signDeviceProof,
  type DeviceProofInput,
} from '../../../protocol/wire/index.js';

const input = (over: Partial<DeviceProofInput> = {}): DeviceProofInput => ({
  purpose: 'auth',
  nonce: new Uint8Array(32).fill(7),
  secretHash: secretHash('header.payload.signature'),
  serverUrl: 'wss://Cards.Example.com:443/v1/session',
  protocolVersion: 1,
  ...over,
});

function hasCode(code: string) {
  return (e: Error & { code?: string }) => {
    assert.equal(e.code, code);
    return true;
  };
}

describe('device proof transcript', () => {
  it('is label, 0, purpose, nonce, SHA-256(token), length-prefixed canonical URL, version', () => {
    const t = Buffer.from(deviceProofTranscript(input()));
    const url = 'wss://cards.example.com/v1/session';
    const expected = Buffer.concat([
      Buffer.from(DEVICE_PROOF_LABEL),
      Buffer.from([0, 1]),
      Buffer.alloc(32, 7),
      createHash('sha256').update('header.payload.signature').digest(),
      Buffer.from([0, url.length]),
      Buffer.from(url),
      Buffer.from([0, 1]),
    ]);
    assert.deepEqual(t, expected);
  });
  it('differs for every input that matters', () => {
    const base = Buffer.from(deviceProofTranscript(input()));
    for (const over of [
      { purpose: 'resume' as const },
      { nonce: new Uint8Array(32).fill(8) },
      { secretHash: secretHash('other') },
      { serverUrl: 'wss://evil.example.com/v1/session' },
      { protocolVersion: 2 },
    ]) {
      assert.notDeepEqual(Buffer.from(deviceProofTranscript(input(over))), base, JSON.stringify(over));
    }
  });
  it('canonicalizes the URL and refuses non-WebSocket URLs', () => {
    assert.equal(canonicalServerUrl('WSS://h.example:443/v1/session#x'), 'wss://h.example/v1/session');
    assert.equal(canonicalServerUrl('wss://127.0.0.1:8443/v1/session'), 'wss://127.0.0.1:8443/v1/session');
    for (const bad of ['https://h/v1/session', 'wss://u:p@h/v1/session', 'not a url']) {
      assert.throws(() => canonicalServerUrl(bad), hasCode('ERR_DEVICE_PROOF_INVALID'), bad);
    }
  });
  it('refuses a short nonce or hash', () => {
    assert.throws(
      () => deviceProofTranscript(input({ nonce: new Uint8Array(31) })),
      hasCode('ERR_DEVICE_PROOF_INVALID'),
    );
    assert.throws(
      () => deviceProofTranscript(input({ secretHash: new Uint8Array(20) })),
      hasCode('ERR_DEVICE_PROOF_INVALID'),
    );
  });
  it('signs with a P-256 key as r || s, and refuses other keys', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const sig = signDeviceProof(privateKey, input());
    assert.equal(sig.length, 64);
    assert.ok(
      verify('sha256', deviceProofTranscript(input()), { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig),
    );
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    assert.throws(() => signDeviceProof(p384, input()), hasCode('ERR_DEVICE_PROOF_INVALID'));
  });
});
