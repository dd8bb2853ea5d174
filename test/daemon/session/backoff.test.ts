import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Backoff } from '../../../daemon/session/backoff.js';

const settings = { initialDelayMs: 100, maxDelayMs: 1000 };

/** The next `n` delays. */
const delays = (b: Backoff, n: number): number[] => Array.from({ length: n }, () => b.next());

describe('Backoff', () => {
  it('random=1 gives the cap: it doubles from initialDelayMs up to maxDelayMs and stays there', () => {
    const b = new Backoff(settings, () => 1);
    assert.deepEqual(delays(b, 7), [100, 200, 400, 800, 1000, 1000, 1000]);
  });

  it('random=0 gives the floor, a tenth of initialDelayMs, on every attempt', () => {
    const b = new Backoff(settings, () => 0);
    assert.deepEqual(delays(b, 6), [10, 10, 10, 10, 10, 10]);
  });

  it('random=0.5 lies halfway between the floor and the cap', () => {
    const b = new Backoff(settings, () => 0.5);
    // floor 10; caps 100, 200, 400, 800, 1000
    assert.deepEqual(delays(b, 5), [55, 105, 205, 405, 505]);
  });

  it('with the defaults (500 ms, 30 s) the cap reaches 30 s on the 7th attempt', () => {
    const b = new Backoff({ initialDelayMs: 500, maxDelayMs: 30_000 }, () => 1);
    assert.deepEqual(delays(b, 8), [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  });

  it('reset() starts again from initialDelayMs', () => {
    const b = new Backoff(settings, () => 1);
    delays(b, 5);
    assert.equal(b.attempts, 5);
    b.reset();
    assert.equal(b.attempts, 0);
    assert.deepEqual(delays(b, 3), [100, 200, 400]);
    assert.equal(b.attempts, 3);
  });

  it('counts attempts', () => {
    const b = new Backoff(settings, () => 0);
    assert.equal(b.attempts, 0);
    b.next();
    b.next();
    assert.equal(b.attempts, 2);
  });

  it('many attempts neither overflow nor exceed maxDelayMs', () => {
    const b = new Backoff({ initialDelayMs: 60_000, maxDelayMs: 3_600_000 }, () => 1);
    const all = delays(b, 200);
    assert.ok(all.every((d) => Number.isFinite(d) && d <= 3_600_000));
    assert.equal(all.at(-1), 3_600_000);
  });

  it('maxDelayMs equal to initialDelayMs keeps the cap there', () => {
    const b = new Backoff({ initialDelayMs: 250, maxDelayMs: 250 }, () => 1);
    assert.deepEqual(delays(b, 4), [250, 250, 250, 250]);
  });

  it("with Math.random every delay is between the floor and that attempt's cap", () => {
    const b = new Backoff(settings);
    for (let attempt = 0; attempt < 1000; attempt++) {
      const cap = Math.min(settings.maxDelayMs, settings.initialDelayMs * 2 ** attempt);
      const d = b.next();
      assert.ok(Number.isInteger(d), `whole milliseconds: ${d}`);
      assert.ok(
        d >= settings.initialDelayMs / 10 && d <= cap,
        `attempt ${attempt}: ${d} not in [10, ${cap}]`,
      );
    }
  });

  it('property: never above maxDelayMs or the doubling cap, never below initialDelayMs / 10', () => {
    fc.assert(
      fc.property(
        // Whole tenths keep the floor a whole number (delays are rounded to milliseconds).
        fc.integer({ min: 1, max: 6000 }).map((n) => n * 10),
        fc.integer({ min: 0, max: 3_600_000 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 60 }),
        (initialDelayMs, extra, randoms) => {
          const maxDelayMs = Math.min(3_600_000, initialDelayMs + extra);
          let i = 0;
          const b = new Backoff({ initialDelayMs, maxDelayMs }, () => randoms[i++]!);
          for (let attempt = 0; attempt < randoms.length; attempt++) {
            const d = b.next();
            const cap = Math.min(maxDelayMs, initialDelayMs * 2 ** attempt);
            assert.ok(d >= initialDelayMs / 10, `${d} < floor`);
            assert.ok(d <= cap, `${d} > cap ${cap}`);
          }
        },
      ),
    );
  });
});
