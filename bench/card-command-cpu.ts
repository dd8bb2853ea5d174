/**
 * The card server's own cost of one command, without network or other processes: a card opened
 * as a session opens it (SQLite in a temporary directory, WAL, the key file KEK), then commands
 * in lock-step through `runCommand` and the real PivCard, as the session layer runs them.
 *
 *   npm run build && node dist/bench/card-command-cpu.js [--n 3000] [--rounds 5]
 *
 * Per round and operation: `--n` commands after n/10 unmeasured, the mean wall time and the
 * process CPU per command. The median round is reported. With nothing else in the loop, this is
 * the figure to compare two builds by: the chain benchmark (daemon-chain.ts) adds the wake-ups of
 * four processes, which on this VM vary by a factor of two within an hour.
 *
 * Operations: GENERAL AUTHENTICATE P-256 sign on 9E (PIN never: key use + audit + record, the
 * group-committed path), RSA-2048 sign on 9A after VERIFY, GET METADATA of 9E (read only).
 * Writes bench/results/card-command-cpu.json and prints it.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { encodeCommandApdu } from '../apdu/codec/index.js';
import { INS, KEY_REF, VERIFY_P1, padReferenceValue } from '../apdu/piv/index.js';
import { openKeyFileProvider } from '../server/keys/key-file-provider.js';
import { migrate, openStorage } from '../server/storage/index.js';
import { BENCH_CARD_PIN, openBenchCardSession } from './support/card-session.js';
import { benchCommand, writeBenchResult } from './support/results.js';
import { p256Command, pkcs1Block, rsaCommand } from './support/sign-commands.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { n: { type: 'string' }, rounds: { type: 'string' } } });
  const n = Number(values.n ?? 3000);
  const rounds = Number(values.rounds ?? 5);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cardlink-cmd-cpu-'));
  const kek = await openKeyFileProvider(path.join(dir, 'keys.json'));
  const storage = await openStorage(`sqlite:${path.join(dir, 'cards.db')}`);
  try {
    await migrate(storage);
    const s = await openBenchCardSession(storage, kek);
    const verify = encodeCommandApdu({
      cla: 0,
      ins: INS.VERIFY,
      p1: VERIFY_P1.VERIFY,
      p2: KEY_REF.PIN,
      data: padReferenceValue(new TextEncoder().encode(BENCH_CARD_PIN)),
    });
    let counter = 0;
    const digest = () => createHash('sha256').update(String(counter++)).digest();
    const run = async (apdu: Uint8Array): Promise<void> => {
      const { response } = await s.state.runCommand(s.nextSeq(), (view) => s.card.transmit(apdu, view), {
        firstAttempt: true,
      });
      const sw = (response[response.length - 2]! << 8) | response[response.length - 1]!;
      if (sw !== 0x9000) throw new Error(`status ${sw.toString(16)}`);
    };
    await run(verify);
    const operations: Record<string, () => Uint8Array> = {
      sign_p256_9e: () => p256Command(digest()),
      sign_rsa2048_9a: () => rsaCommand(pkcs1Block(digest())),
      metadata_9e: () => Buffer.from('00F7009E00', 'hex'),
    };
    const results: Record<string, { wall_us_per_command: number; cpu_us_per_command: number }> = {};
    for (const [name, make] of Object.entries(operations)) {
      const count = name === 'sign_rsa2048_9a' ? Math.ceil(n / 5) : n;
      const perRound: { wall: number; cpu: number }[] = [];
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < Math.ceil(count / 10); i++) await run(make());
        const commands = Array.from({ length: count }, make);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (const apdu of commands) await run(apdu);
        const wall = ((performance.now() - t0) * 1000) / count;
        const cpu = process.cpuUsage(cpu0);
        perRound.push({ wall, cpu: (cpu.user + cpu.system) / count });
      }
      perRound.sort((a, b) => a.wall - b.wall);
      const median = perRound[Math.floor(perRound.length / 2)]!;
      results[name] = {
        wall_us_per_command: Math.round(median.wall * 10) / 10,
        cpu_us_per_command: Math.round(median.cpu * 10) / 10,
      };
    }
    const result = {
      benchmark: 'card-command-cpu',
      command: benchCommand(),
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version, kernel: os.release() },
      method: `runCommand + PivCard in one process, SQLite (WAL) in a temporary directory; ${n} commands per round (RSA ${Math.ceil(n / 5)}), ${rounds} rounds, median round`,
      results,
    };
    writeBenchResult('card-command-cpu', result);
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await storage.close();
    await kek.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
