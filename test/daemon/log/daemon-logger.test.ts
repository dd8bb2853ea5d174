import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { closeDaemonLogger, createDaemonLogger, LOG_FILE_MODE } from '../../../daemon/log/daemon-logger.js';
import { describeApdu } from '../../../daemon/log/apdu-trace.js';

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-daemon-log-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const mode = (p: string): number => fs.statSync(p).mode & 0o777;
const readLines = (p: string): Record<string, unknown>[] =>
  fs
    .readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('createDaemonLogger', () => {
  it('writes JSON lines to a 0600 file in a new 0700 directory', async () => {
    const file = path.join(dir, 'logs', 'nested', 'daemon.log');
    const logger = createDaemonLogger({ level: 'info', file });
    logger.info('started', { readers: 1 });
    logger.debug('not at info level');
    await closeDaemonLogger(logger);
    assert.equal(mode(file), LOG_FILE_MODE);
    assert.equal(mode(path.dirname(file)), 0o700);
    assert.equal(mode(path.join(dir, 'logs')), 0o700);
    const lines = readLines(file);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.message, 'started');
    assert.equal(lines[0]!.level, 'info');
    assert.equal(lines[0]!.component, 'daemon');
    assert.equal(lines[0]!.readers, 1);
    assert.equal(typeof lines[0]!.timestamp, 'string');
  });

  it('narrows an existing log file to 0600', async () => {
    const file = path.join(dir, 'daemon.log');
    fs.writeFileSync(file, '', { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    const logger = createDaemonLogger({ level: 'info', file });
    logger.info('x');
    await closeDaemonLogger(logger);
    assert.equal(mode(file), LOG_FILE_MODE);
  });

  it('never writes the PIN of a traced VERIFY, and masks GENERAL AUTHENTICATE', async () => {
    const file = path.join(dir, 'daemon.log');
    const logger = createDaemonLogger({ level: 'debug', file });
    const verify = Uint8Array.from(Buffer.from('0020008008313233343536FFFF', 'hex'));
    const auth = Uint8Array.from(Buffer.from('0087119a087c06820081020102', 'hex'));
    const select = Uint8Array.from(Buffer.from('00a4040009a00000030800001000', 'hex'));
    logger.debug('apdu', describeApdu(verify, Uint8Array.of(0x90, 0x00)));
    logger.debug('apdu', describeApdu(auth, Uint8Array.of(0x55, 0x66, 0x77, 0x88, 0x90, 0x00)));
    logger.debug('apdu', describeApdu(select, Uint8Array.of(0x90, 0x00)));
    await closeDaemonLogger(logger);
    const text = fs.readFileSync(file, 'utf8');
    for (const needle of ['313233343536', '123456', '7c0682', '7C0682', '55667788'])
      assert.ok(!text.includes(needle), `${needle} in the log`);
    const [v, a, s] = readLines(file);
    assert.equal(v!.data, '[masked 8 bytes]');
    assert.equal(v!.ins, '20');
    assert.equal(a!.data, '[masked 8 bytes]');
    assert.equal(a!.responseData, '[masked 4 bytes]');
    assert.equal(s!.data, 'A00000030800001000');
  });

  it('escapes control characters and redacts secret fields in the file', async () => {
    const file = path.join(dir, 'daemon.log');
    const logger = createDaemonLogger({ level: 'info', file });
    logger.info('card "evil\n{"level":"error"}\r\u001b[2J\u2028end"', { reader: 'r\u0000x', pin: '123456' });
    await closeDaemonLogger(logger);
    const text = fs.readFileSync(file, 'utf8');
    const raw = text.split('\n').filter((l) => l !== '');
    assert.equal(raw.length, 1, 'a message must not split the line');
    // eslint-disable-next-line no-control-regex
    assert.ok(!/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(raw[0]!));
    assert.ok(!text.includes('123456'));
    const [line] = readLines(file);
    assert.equal(line!.message, 'card "evil\\u000a{"level":"error"}\\u000d\\u001b[2J\\u2028end"');
    assert.equal(line!.reader, 'r\\u0000x');
    assert.equal(line!.pin, '[redacted]');
    assert.equal(line!.level, 'info');
  });

  it('rotates the file past maxSizeBytes, keeping maxFiles files of mode 0600', async () => {
    const file = path.join(dir, 'daemon.log');
    const maxSizeBytes = 4096;
    const logger = createDaemonLogger({ level: 'info', file, maxSizeBytes, maxFiles: 3 });
    const filler = 'x'.repeat(200);
    const total = 200;
    for (let i = 0; i < total; i++) {
      logger.info('line', { i, filler });
      // Let the transport rotate between bursts, as a running daemon would. winston's tailable
      // rotation (a chain of renames) can misplace lines that arrive while it runs; at 5 ms a CI
      // machine under load once lost that race (lines 103..156 missing from the kept files). A
      // daemon writes a few lines a second, so bursts of 10 with 25 ms between them still rotate
      // the file a dozen times here.
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 25));
    }
    await closeDaemonLogger(logger);
    const names = fs.readdirSync(dir).sort();
    assert.deepEqual(names, ['daemon.log', 'daemon1.log', 'daemon2.log']);
    let lastSeen = -1;
    for (const name of ['daemon2.log', 'daemon1.log', 'daemon.log']) {
      const p = path.join(dir, name);
      assert.equal(mode(p), LOG_FILE_MODE, `${name} mode`);
      // A file is rotated near the limit: winston counts lines still pending (so it may rotate a
      // little early), and lines arriving while it rotates still go to the old file (so a file may
      // grow past the limit under load). Only a rough lower bound is stable.
      if (name !== 'daemon.log')
        assert.ok(fs.statSync(p).size >= maxSizeBytes / 2, `${name} is ${fs.statSync(p).size} bytes`);
      for (const line of readLines(p)) {
        // The kept files hold the newest lines, none lost and in order.
        if (lastSeen >= 0) assert.equal(line.i, lastSeen + 1, 'lines stay in order across the files');
        lastSeen = line.i as number;
      }
    }
    assert.equal(lastSeen, total - 1, 'the newest line is in the current file');
    const kept = names.reduce((n, name) => n + fs.statSync(path.join(dir, name)).size, 0);
    assert.ok(kept < total * 200, 'the oldest files were deleted');
  });

  it('rejects rotation limits that cannot work', () => {
    const file = path.join(dir, 'daemon.log');
    assert.throws(() => createDaemonLogger({ level: 'info', file, maxFiles: 1 }), RangeError);
    assert.throws(() => createDaemonLogger({ level: 'info', file, maxSizeBytes: 0 }), RangeError);
  });
});
