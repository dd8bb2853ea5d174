import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { createMemoryCardState } from '../../../apdu/piv/memory-card-state.js';
import { encodeCcc, GSC_RID } from '../../../apdu/piv/objects/ccc.js';
import { encodeChuid } from '../../../apdu/piv/objects/chuid.js';
import { defaultObjects, installDefaultObjects } from '../../../apdu/piv/objects/default-objects.js';
import { encodeDiscovery } from '../../../apdu/piv/objects/discovery.js';
import { decodeFascNCharacters, encodeFascN, NON_FEDERAL_FASCN } from '../../../apdu/piv/objects/fasc-n.js';
import { decodeKeyHistory, encodeKeyHistory } from '../../../apdu/piv/objects/key-history.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { hex, randomManagementKey, TEST_PIN, TEST_PUK, toHex } from './support/host.js';

const GUID = hex('00112233445566778899AABBCCDDEEFF');

describe('PIV data objects', () => {
  it('encodes the FASC-N as TIG SCEPACS section 6 (published test vector)', () => {
    const fascn = encodeFascN({
      agencyCode: '0032',
      systemCode: '0001',
      credentialNumber: '092446',
      credentialSeries: '0',
      individualCredentialIssue: '1',
      personIdentifier: '1112223333',
      organizationalCategory: '1',
      organizationalIdentifier: '1223',
      personAssociation: '2',
    });
    assert.equal(toHex(fascn), 'D0439458210C2C19A0846D83685A1082108CE73984108CA3FC');
  });

  it("cardlink's FASC-N has agency code 9999", () => {
    const chars = decodeFascNCharacters(encodeFascN(NON_FEDERAL_FASCN));
    assert.equal(chars.slice(0, 30), 'S9999F9999F999999F0F1F00000000');
    assert.throws(() => encodeFascN({ ...NON_FEDERAL_FASCN, agencyCode: '99' }), RangeError);
  });

  it('CHUID: FASC-N, GUID, expiration date, empty signature and EDC', () => {
    const chuid = parseTlvList(encodeChuid({ guid: GUID, expires: new Date('2035-03-07T12:00:00Z') }));
    assert.deepEqual(
      chuid.map((t) => t.tag),
      [0x30, 0x34, 0x35, 0x3e, 0xfe],
    );
    assert.equal(findTlv(chuid, 0x30)!.value.length, 25);
    assert.equal(toHex(findTlv(chuid, 0x34)!.value), toHex(GUID));
    assert.equal(Buffer.from(findTlv(chuid, 0x35)!.value).toString(), '20350307');
  });

  it('CCC uses the GSC-IS RID, never the CAC RID', () => {
    const ccc = encodeCcc(GUID);
    const f0 = findTlv(parseTlvList(ccc), 0xf0)!.value;
    assert.equal(f0.length, 21);
    assert.equal(toHex(f0.subarray(0, 5)), toHex(GSC_RID));
    assert.ok(!toHex(ccc).includes('A000000079'));
    assert.equal(toHex(findTlv(parseTlvList(ccc), 0xf5)!.value), '10');
  });

  it('Discovery Object: PIV AID and PIN usage policy 40 00', () => {
    assert.equal(toHex(encodeDiscovery()), '4F0BA0000003080000100001005F2F024000');
  });

  it('Key History encodes and decodes its two counts', () => {
    assert.equal(toHex(encodeKeyHistory(2)), 'C10102C20100FE00');
    assert.deepEqual(decodeKeyHistory(encodeKeyHistory(3, 0)), { onCard: 3, offCard: 0 });
    assert.throws(() => encodeKeyHistory(21));
  });

  it('installs the default objects once and never replaces an existing CHUID', async () => {
    const state = createMemoryCardState({
      pin: TEST_PIN,
      puk: TEST_PUK,
      managementKey: { algorithm: 'AES128', key: randomManagementKey('AES128') },
      guid: GUID,
    });
    const written = await installDefaultObjects(state, { now: new Date('2030-01-01T00:00:00Z') });
    assert.deepEqual(written, [
      OBJECT_TAG.CARD_CAPABILITY_CONTAINER,
      OBJECT_TAG.CHUID,
      OBJECT_TAG.DISCOVERY,
      OBJECT_TAG.KEY_HISTORY,
    ]);
    const chuid = await state.objects.get(OBJECT_TAG.CHUID);
    assert.equal(Buffer.from(findTlv(parseTlvList(chuid!), 0x35)!.value).toString(), '20400101');
    assert.deepEqual(await installDefaultObjects(state), []);
    assert.equal(toHex((await state.objects.get(OBJECT_TAG.CHUID))!), toHex(chuid!));
    assert.equal(defaultObjects(state.identity).length, 4);
  });
});
