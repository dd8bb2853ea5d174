/**
 * The daemon asks the card server's PIN route at the host and port of its `server.url`, which the
 * daemon's config accepts with the WebSocket scheme too: the route itself is always HTTPS.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pinRequestUrl } from '../../../daemon/session/pin-by-sign-in-request.js';
import { PIN_BY_SIGN_IN_PATH } from '../../../protocol/pin-by-sign-in.js';

describe('pinRequestUrl', () => {
  it('is https on the server URL host and port, for an https or a wss server URL', () => {
    for (const serverUrl of ['https://cards.example.com:8443/', 'wss://cards.example.com:8443/session']) {
      const url = pinRequestUrl(serverUrl);
      assert.equal(url.protocol, 'https:');
      assert.equal(url.host, 'cards.example.com:8443');
      assert.equal(url.pathname, PIN_BY_SIGN_IN_PATH);
    }
  });
});
