/**
 * Certificate templates in card profiles (server/admin/certificate-template.ts): what a profile may
 * say, the error that names the field when it says something else, the slot defaults, and how
 * claims fill a template.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EXTENDED_KEY_USAGE } from '../../../apdu/piv/certificates/index.js';
import {
  checkClaimValue,
  fillTemplate,
  parseCertificateTemplate,
  resolveTemplate,
} from '../../../server/admin/certificate-template.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../../server/admin/index.js';

const fieldError = (field: string) => (e: Error & { code?: string; context?: Record<string, unknown> }) => {
  assert.equal(e.code, 'ERR_CONFIG_INVALID');
  assert.equal(e.context?.field, field, e.message);
  return true;
};

describe('certificate templates', () => {
  it('round-trips through the profile JSON with the card', async () => {
    const json = profileToJson(await loadDefaultProfile()) as { slots: Record<string, unknown>[] };
    json.slots[0]!['template'] = {
      subject: [{ CN: '{name}' }, { O: 'Example' }],
      san: { email: '{email}' },
      keyUsage: ['digitalSignature'],
      extendedKeyUsage: ['clientAuth', '1.3.6.1.5.2.3.4'],
      validityDays: 30,
    };
    const profile = parseCardProfile({ ...json, cardSerials: { first: 10, last: 20 } });
    assert.deepEqual(profile.slots[0]!.template?.extendedKeyUsage, [
      EXTENDED_KEY_USAGE.clientAuth,
      '1.3.6.1.5.2.3.4',
    ]);
    assert.deepEqual(profile.cardSerials, { first: 10, last: 20 });
    assert.deepEqual(parseCardProfile(profileToJson(profile)), profile);
  });

  it('names the offending field', () => {
    const bad = (template: unknown, field: string) =>
      assert.throws(() => parseCertificateTemplate(template, 't'), fieldError(field));
    bad({ subjectName: 'x' }, 't.subjectName');
    bad({ subject: [] }, 't.subject');
    bad({ subject: [{ XX: 'a' }] }, 't.subject[0]');
    bad({ subject: [{ CN: 'a', O: 'b' }] }, 't.subject[0]');
    bad({ subject: [{ CN: 'a\nb' }] }, 't.subject[0]');
    bad({ san: { dns: 'x' } }, 't.san.dns');
    bad({ keyUsage: ['keyCertSign'] }, 't.keyUsage');
    bad({ keyUsage: ['digitalSignature', 'digitalSignature'] }, 't.keyUsage');
    bad({ extendedKeyUsage: ['anything'] }, 't.extendedKeyUsage');
    bad({ validityDays: 0 }, 't.validityDays');
    assert.throws(
      () => parseCardProfile({ ...profileToJsonSync(), cardSerials: { first: 5, last: 4 } }),
      fieldError('cardSerials.last'),
    );
  });

  it('defaults by slot: 9A logon, 9C signature, 9D encryption (keyAgreement for EC), 9E card authentication', () => {
    const a = resolveTemplate(0x9a, 'RSA2048', undefined, 365);
    assert.deepEqual(a.keyUsage, ['digitalSignature']);
    assert.deepEqual(a.extendedKeyUsage, [EXTENDED_KEY_USAGE.clientAuth, EXTENDED_KEY_USAGE.smartcardLogon]);
    assert.deepEqual(a.san, { email: '{email}', upn: '{upn}' });
    assert.deepEqual(resolveTemplate(0x9c, 'ECCP256', undefined, 365).keyUsage, [
      'digitalSignature',
      'nonRepudiation',
    ]);
    assert.deepEqual(resolveTemplate(0x9d, 'RSA2048', undefined, 365).keyUsage, ['keyEncipherment']);
    assert.deepEqual(resolveTemplate(0x9d, 'ECCP384', undefined, 365).keyUsage, ['keyAgreement']);
    const e = resolveTemplate(0x9e, 'ECCP256', undefined, 90);
    assert.deepEqual(e.extendedKeyUsage, [EXTENDED_KEY_USAGE.pivCardAuth]);
    assert.deepEqual(e.subject, [{ attribute: 'CN', value: 'card {serial}' }]);
    assert.equal(e.validityDays, 90);
    const custom = resolveTemplate(0x9a, 'RSA2048', { validityDays: 1 }, 365);
    assert.equal(custom.validityDays, 1);
    assert.deepEqual(custom.keyUsage, ['digitalSignature'], 'unset members keep the default');
  });

  it('fills claims; a missing or empty claim gives undefined', () => {
    assert.equal(fillTemplate('{name} <{email}>', { name: 'Alice', email: 'a@x' }), 'Alice <a@x>');
    assert.equal(fillTemplate('{sub}@corp', { sub: 'alice' }), 'alice@corp');
    assert.equal(fillTemplate('{email}', {}), undefined);
    assert.equal(fillTemplate('{email}', { email: '' }), undefined);
    assert.equal(fillTemplate('{constructor}', {}), undefined, 'only own claims');
    assert.equal(fillTemplate('plain', {}), 'plain');
    assert.throws(() => checkClaimValue('email', 'a\u0007b'), fieldError('claims.email'));
    assert.throws(() => checkClaimValue('bad name', 'x'), fieldError('claims'));
    assert.throws(() => checkClaimValue('email', 'x'.repeat(257)), fieldError('claims.email'));
  });
});

/** A minimal valid profile as JSON. */
function profileToJsonSync(): Record<string, unknown> {
  return {
    name: 'p',
    label: 'l',
    slots: [{ slot: '9A', algorithm: 'RSA2048' }],
    pin: { minLength: 6, maxLength: 8, retries: 3 },
    puk: { minLength: 8, maxLength: 8, retries: 3 },
    managementKey: { algorithm: 'AES192' },
  };
}
