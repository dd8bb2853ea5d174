/**
 * The aggregated log of the connection limits, through the real cardlink logger: many refusals
 * make one line per window with the counts and the busiest addresses; a quiet window writes none.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import winston from 'winston';
import { createLogger } from '../../../protocol/log.js';
import { ConnectionLimitLog } from '../../../server/http/connection-limit-log.js';

function capture(): { lines: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const sink = new PassThrough();
  sink.on('data', (d: Buffer) => {
    for (const text of d.toString().split('\n'))
      if (text) lines.push(JSON.parse(text) as Record<string, unknown>);
  });
  const logger = createLogger({ component: 'test', level: 'info' }, [
    new winston.transports.Stream({ stream: sink }),
  ]);
  return { lines, logger };
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ConnectionLimitLog', () => {
  it('writes one summary per window, naming the limits, their counts and the busiest addresses', async () => {
    const { lines, logger } = capture();
    const log = new ConnectionLimitLog(logger, 1500);
    for (let i = 0; i < 500; i++) log.record('maxSocketsPerAddress', '192.0.2.1');
    for (let i = 0; i < 7; i++) log.record('maxSockets', `198.51.100.${i}`);
    log.record('socketIdleTimeoutSeconds', '192.0.2.1');
    await settle(100);
    assert.equal(lines.length, 0, 'nothing before the window ends');
    for (let waited = 0; lines.length === 0 && waited < 20_000; waited += 50) await settle(50);
    assert.equal(lines.length, 1);
    const line = lines[0]!;
    assert.equal(line['level'], 'warn');
    assert.deepEqual(line['limits'], {
      'limits.maxSocketsPerAddress': 500,
      'limits.maxSockets': 7,
      'limits.socketIdleTimeoutSeconds': 1,
    });
    const addresses = line['addresses'] as { address: string; sockets: number }[];
    assert.equal(addresses.length, 5);
    assert.deepEqual(addresses[0], { address: '192.0.2.1', sockets: 501 });
    assert.equal(line['otherAddresses'], 3);
    // A quiet window writes nothing; the next event starts a new one.
    await settle(2000);
    assert.equal(lines.length, 1);
    log.record('headersTimeoutSeconds', '192.0.2.9');
    log.flush();
    assert.equal(lines.length, 2);
    assert.equal(lines[1]!['level'], 'info', 'timeouts alone are routine');
    assert.deepEqual(lines[1]!['limits'], { 'limits.headersTimeoutSeconds': 1 });
    log.flush();
    assert.equal(lines.length, 2, 'flush with nothing pending writes nothing');
  });

  it('counts sockets from more addresses than it tracks without naming or keeping them', () => {
    const { lines, logger } = capture();
    const log = new ConnectionLimitLog(logger, 60_000);
    for (let i = 0; i < 1500; i++) log.record('maxSockets', `10.0.${i >> 8}.${i & 0xff}`);
    log.flush();
    assert.equal(lines.length, 1);
    assert.equal((lines[0]!['limits'] as Record<string, number>)['limits.maxSockets'], 1500);
    assert.equal(lines[0]!['otherAddresses'], 995);
    assert.equal(lines[0]!['socketsFromUntrackedAddresses'], 500);
  });
});
