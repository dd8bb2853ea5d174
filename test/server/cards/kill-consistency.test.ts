import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, verify } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { spkiOf } from '../../../apdu/piv/crypto/index.js';
import { verifyChain } from '../../../server/audit/audit-log.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { checkPinVerifier } from '../../../server/keys/pin-verifier.js';
import { unsealSecret } from '../../../server/keys/sealing.js';
import { findCardKey, getCard, migrate, openStorage, type Storage } from '../../../server/storage/index.js';
import { expectSw, toHex } from '../../apdu/piv/support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';
import { BACKENDS, createBackend, tempKeyFileProvider } from '../storage/backends.js';
import { auditOf, CARD_PIN, createTestCard, openSession, pinBytes } from './support/card-fixture.js';

/** Child processes killed per backend. */
const ROUNDS = 5;
/** The child is killed this many milliseconds after it has opened the card (uniformly random). */
const KILL_AFTER_MS = { min: 20, max: 400 };
/** Milliseconds a child may take to open the card. */
const CHILD_START_TIMEOUT_MS = 15_000;
const OTHER_PIN = '654321';
const PIN_RETRIES = 10;

const childPath = fileURLToPath(new URL('./support/kill-child.js', import.meta.url));

/**
 * Starts a child on the card and SIGKILLs it a random moment after it is ready, or, with
 * `afterFirstGeneration`, after it committed its first key generation: on a loaded machine a child
 * may otherwise be killed five times before it committed anything, and the test would prove nothing.
 */
async function runAndKill(args: string[], afterFirstGeneration = false): Promise<void> {
  const startLine = afterFirstGeneration ? 'generated' : 'ready';
  const child = spawn(process.execPath, [childPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`child did not start: ${stderr}`)),
      CHILD_START_TIMEOUT_MS,
    );
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes(startLine)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(([code]) => {
      clearTimeout(timer);
      reject(new Error(`child exited with ${code} before it was killed: ${stderr}`));
    });
  });
  const delay = KILL_AFTER_MS.min + Math.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min);
  await new Promise((r) => setTimeout(r, delay));
  child.kill('SIGKILL');
  const [code, signal] = await exited;
  assert.equal(signal, 'SIGKILL', `child died on its own (exit ${code}): ${stderr}`);
}

/**
 * The card is in a state some prefix of the child's commands produced: 9A's sealed key opens with
 * its row's binding and matches the row's public key and the last `key.generated` entry; the PIN
 * verifier is exactly one of the two PINs, the one the number of `pin.changed` entries says; the
 * audit chain holds. Returns the current PIN.
 */
async function checkConsistent(storage: Storage, kek: KekProvider, cardId: string): Promise<string> {
  const card = await getCard(storage, cardId);
  const row = (await findCardKey(storage, cardId, 0x9a))!;
  const pkcs8 = await unsealSecret(kek, row.key, { tenantId: card.tenantId, cardId, slot: 0x9a });
  const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  assert.equal(
    toHex(spkiOf(privateKey)),
    toHex(row.publicKeySpki),
    'sealed key and public key belong together',
  );
  const spkiHash = createHash('sha256').update(row.publicKeySpki).digest('hex');
  const generated = (await auditOf(storage, cardId, 'key.generated')).filter(
    (e) => e.details.slot === '0x9a',
  );
  const last = generated[generated.length - 1];
  if (last) {
    assert.equal(last.details.keyVersion, row.key.keyVersion, 'audit entry and key row from one commit');
    assert.equal(last.details.publicKeySha256, spkiHash);
  } else {
    const createdEntry = (await auditOf(storage, cardId, 'card.created'))[0]!;
    const slots = createdEntry.details.slots as { slot: string; publicKeySha256: string }[];
    assert.equal(slots.find((s) => s.slot === '0x9a')!.publicKeySha256, spkiHash, 'still the created key');
  }

  const verifier = (
    await storage.db
      .selectFrom('cards')
      .select('pin_verifier')
      .where('id', '=', cardId)
      .executeTakeFirstOrThrow()
  ).pin_verifier;
  const matches: string[] = [];
  for (const pin of [CARD_PIN, OTHER_PIN]) {
    if ((await checkPinVerifier(kek, { cardId, kind: 'pin' }, verifier, pinBytes(pin))).match)
      matches.push(pin);
  }
  assert.equal(matches.length, 1, 'the PIN is the old or the new one');
  const changes = (await auditOf(storage, cardId, 'pin.changed')).length;
  assert.equal(
    matches[0],
    changes % 2 === 0 ? CARD_PIN : OTHER_PIN,
    'PIN and its audit entries from one commit',
  );
  assert.ok(card.pinRetries.remaining > 0 && card.pinRetries.remaining <= PIN_RETRIES);

  const chain = await verifyChain(storage);
  assert.equal(chain.ok, true, JSON.stringify(chain));
  return matches[0]!;
}

for (const kind of BACKENDS) {
  describe(`kill -9 during key generation and PIN changes on ${kind}`, () => {
    it(`leaves old-or-new state after ${ROUNDS} SIGKILLs, and the card works`, async () => {
      const backend = await createBackend(kind);
      const keys = await tempKeyFileProvider();
      const open = async () => {
        const s = await openStorage(backend.url);
        await migrate(s);
        return s;
      };
      // SQLite is exclusive to one process: the parent lets go while the child runs.
      let storage: Storage | undefined = await open();
      try {
        const created = await createTestCard(storage, keys.provider, {
          pin: { minLength: 6, maxLength: 8, retries: PIN_RETRIES },
        });
        let pin = CARD_PIN;
        for (let round = 0; round < ROUNDS; round++) {
          if (kind === 'sqlite') {
            await storage!.close();
            storage = undefined;
          }
          await runAndKill(
            [backend.url, keys.path, created.cardId, pin, pin === CARD_PIN ? OTHER_PIN : CARD_PIN],
            round === 0,
          );
          storage ??= await open();
          pin = await checkConsistent(storage, keys.provider, created.cardId);
        }
        const generations = (await auditOf(storage!, created.cardId, 'key.generated')).length;
        assert.ok(generations > 0, 'the children got some work done');

        // The card works on: VERIFY with the current PIN, sign with the current 9A key.
        const session = await openSession(storage!, keys.provider, created.cardId);
        expectSw(await session.host.verifyPin(pinBytes(pin)), '9000');
        const info = (await session.state.keys.info(0x9a))!;
        const msg = Buffer.from('after the kills');
        const input =
          info.algorithm === 'RSA2048'
            ? pkcs1v15Sha256Block(msg, 256)
            : createHash('sha256').update(msg).digest();
        const r = await session.host.privateKeyOp(ALGORITHM_IDS[info.algorithm], 0x9a, 0x81, input);
        expectSw(r, '9000');
        const key = createPublicKey({ key: Buffer.from(info.publicKeySpki), format: 'der', type: 'spki' });
        assert.ok(
          verify('sha256', msg, info.algorithm === 'RSA2048' ? key : { key, dsaEncoding: 'der' }, r.data),
        );
        session.state.dispose();
      } finally {
        await storage?.close();
        await backend.cleanup();
        await keys.cleanup();
      }
    });
  });
}
