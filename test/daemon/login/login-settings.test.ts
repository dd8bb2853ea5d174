import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadDaemonConfig } from '../../../daemon/config/daemon-config.js';
import {
  browserLoginOptionsFor,
  idpRequestOptionsFor,
  oidcSettingsAt,
  oidcSettingsFrom,
} from '../../../daemon/login/login-settings.js';
import { DEFAULT_OIDC_SCOPE } from '../../../daemon/login/oidc-client-settings.js';
import { ConfigError } from '../../../protocol/config/config-sources.js';

describe('sign-in settings from the daemon settings (cardlink login, the tray)', () => {
  let dir: string;
  const load = (login: Record<string, unknown>) => {
    const file = path.join(dir, `daemon-${Object.keys(login).join('-') || 'none'}.json`);
    fs.writeFileSync(file, JSON.stringify({ server: { url: 'https://cards.example/' }, login }));
    return { file, config: loadDaemonConfig({ config: file }, { HOME: dir, XDG_RUNTIME_DIR: dir }) };
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-login-settings-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('takes issuer, client, resource and the default scope', () => {
    const { config } = load({
      issuer: 'https://login.example/',
      clientId: 'cardlink',
      resource: 'https://cards.example/',
    });
    assert.deepEqual(oidcSettingsFrom(config), {
      issuer: 'https://login.example/',
      clientId: 'cardlink',
      scope: DEFAULT_OIDC_SCOPE,
      resource: 'https://cards.example/',
    });
  });

  it('each configured identity provider by its place, the default first; the fixed redirect port', () => {
    const { file, config } = load({
      clientId: 'cardlink',
      resource: 'https://cards.example/',
      redirectPort: 47_311,
      issuers: [
        { issuer: 'https://login.example/' },
        { issuer: 'https://partners.example/', clientId: 'partners', scope: 'openid cards' },
        { issuer: 'https://guests.example/', clientId: 'guests' },
      ],
    });
    assert.deepEqual(oidcSettingsAt(config, 0), oidcSettingsFrom(config));
    assert.equal(oidcSettingsAt(config, 0).issuer, 'https://login.example/');
    assert.deepEqual(oidcSettingsAt(config, 1), {
      issuer: 'https://partners.example/',
      clientId: 'partners',
      scope: 'openid cards',
      resource: 'https://cards.example/',
    });
    assert.throws(
      () => oidcSettingsAt(config, 3),
      (e: unknown) =>
        e instanceof ConfigError && e.context.key === 'login.issuers[3]' && e.context.source === file,
    );
    assert.equal(browserLoginOptionsFor(config, oidcSettingsAt(config, 1)).redirectPort, 47_311);
  });

  it('names the missing key and the file', () => {
    const noIssuer = load({ clientId: 'cardlink' });
    assert.throws(
      () => oidcSettingsFrom(noIssuer.config),
      (e: unknown) =>
        e instanceof ConfigError && e.context.key === 'login.issuer' && e.message.includes(noIssuer.file),
    );
    const noClient = load({ issuer: 'https://login.example/' });
    assert.throws(
      () => oidcSettingsFrom(noClient.config),
      (e: unknown) => e instanceof ConfigError && e.context.key === 'login.clientId',
    );
  });

  it('allows an http issuer only on loopback', () => {
    const settings = { issuer: 'http://127.0.0.1:9000/', clientId: 'c' };
    assert.deepEqual(idpRequestOptionsFor(settings), { allowInsecureHttpIssuer: true });
    assert.deepEqual(idpRequestOptionsFor({ ...settings, issuer: 'https://login.example/' }), {
      allowInsecureHttpIssuer: false,
    });
  });
});
