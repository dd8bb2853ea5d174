import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LogRateLimiter, SUPPRESSED_LINES_MESSAGE } from '../../protocol/log-limiter.js';
import { capturedLogger } from '../support/captured-log.js';

/** Lets winston's stream pipeline deliver what was logged. */
const settle = () => new Promise((r) => setImmediate(r));

describe('repeated log line limiter', () => {
  it('writes the first N lines of a message per interval, then one summary with the count held back', async () => {
    const { logger, lines } = capturedLogger();
    const clock = { now: 0 };
    const limiter = new LogRateLimiter(logger, { lines: 5, intervalMs: 60_000 }, () => clock.now);
    let written = 0;
    for (let i = 0; i < 1000; i++)
      if (limiter.log('info', 'authentication refused', { attempt: i })) written++;
    assert.equal(written, 5);
    // The next interval: its first line closes the last one with a summary.
    clock.now += 60_000;
    assert.equal(limiter.log('info', 'authentication refused', { attempt: 1000 }), true);
    await settle();
    const refused = lines.filter((l) => l['message'] === 'authentication refused');
    assert.deepEqual(
      refused.map((l) => l['attempt']),
      [0, 1, 2, 3, 4, 1000],
    );
    const summaries = lines.filter((l) => l['message'] === SUPPRESSED_LINES_MESSAGE);
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0]!['repeated'], 'authentication refused');
    assert.equal(summaries[0]!['suppressed'], 995);
    assert.equal(summaries[0]!['written'], 5);
    assert.equal(summaries[0]!['level'], 'info');
    // The summary comes before the new interval's first line.
    assert.ok(lines.indexOf(summaries[0]!) < lines.indexOf(refused[5]!));
    limiter.flush();
  });

  it('limits each message on its own: a flood of one does not silence another', async () => {
    const { logger, lines } = capturedLogger();
    const limiter = new LogRateLimiter(logger, { lines: 2, intervalMs: 60_000 });
    for (let i = 0; i < 100; i++) limiter.log('info', 'closing connection');
    assert.equal(limiter.log('warn', 'card opened'), true);
    limiter.flush();
    await settle();
    assert.equal(lines.filter((l) => l['message'] === 'closing connection').length, 2);
    assert.equal(lines.filter((l) => l['message'] === 'card opened').length, 1);
    const summary = lines.find((l) => l['message'] === SUPPRESSED_LINES_MESSAGE);
    assert.equal(summary?.['repeated'], 'closing connection');
    assert.equal(summary?.['suppressed'], 98);
  });

  it('writes the summary when the interval ends, with no further line to trigger it', async () => {
    const { logger, lines } = capturedLogger();
    const limiter = new LogRateLimiter(logger, { lines: 1, intervalMs: 200 });
    for (let i = 0; i < 10; i++) limiter.log('error', 'request failed');
    await settle();
    assert.equal(lines.length, 1);
    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l['message'] === SUPPRESSED_LINES_MESSAGE) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const summary = lines.find((l) => l['message'] === SUPPRESSED_LINES_MESSAGE);
    assert.equal(summary?.['suppressed'], 9);
    assert.equal(summary?.['level'], 'error');
    assert.equal(limiter.size, 0);
  });

  it('tracks at most maxKeys messages, summarising the oldest it drops', async () => {
    const { logger, lines } = capturedLogger();
    const limiter = new LogRateLimiter(logger, { lines: 1, intervalMs: 60_000, maxKeys: 10 });
    limiter.log('info', 'first');
    limiter.log('info', 'first');
    for (let i = 0; i < 100; i++) limiter.log('info', `message ${i}`);
    assert.equal(limiter.size, 10);
    await settle();
    const summary = lines.find((l) => l['message'] === SUPPRESSED_LINES_MESSAGE);
    assert.equal(summary?.['repeated'], 'first');
    assert.equal(summary?.['suppressed'], 1);
    limiter.flush();
    assert.equal(limiter.size, 0);
  });

  it('refuses limits it cannot work with', () => {
    const { logger } = capturedLogger();
    assert.throws(() => new LogRateLimiter(logger, { lines: -1, intervalMs: 1000 }), RangeError);
    assert.throws(() => new LogRateLimiter(logger, { lines: 1, intervalMs: 0 }), RangeError);
  });
});
