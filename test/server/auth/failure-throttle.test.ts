import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  addressThrottleKey,
  BASE_DELAY_MS,
  FailureThrottle,
  type ThrottleLimits,
} from '../../../server/auth/failure-throttle.js';

const LIMITS: ThrottleLimits = {
  freeFailures: 3,
  maxDelaySeconds: 60,
  halfLifeSeconds: 600,
  maxEntries: 100,
};

/** A throttle on a clock the test moves. */
function throttleAt(limits: Partial<ThrottleLimits> = {}) {
  const clock = { now: 1_000_000 };
  const throttle = new FailureThrottle({ ...LIMITS, ...limits }, () => clock.now);
  /** One attempt that fails; returns the wait it was refused with (0: it ran and failed). */
  const failOnce = (key: string): number => {
    const wait = throttle.admit(key);
    if (wait === 0) throttle.finish(key, true);
    return wait;
  };
  return { clock, throttle, failOnce };
}

describe('failed sign-in throttle', () => {
  it('lets the free failures through, then waits 1 s, 2 s, 4 s ... capped at the maximum', () => {
    const { clock, throttle, failOnce } = throttleAt();
    for (let i = 0; i < LIMITS.freeFailures; i++) assert.equal(failOnce('a'), 0, `free failure ${i + 1}`);
    const waits: number[] = [];
    for (let i = 0; i < 10; i++) {
      // Each attempt comes the moment its wait is over; the one before that is refused with the wait.
      assert.equal(failOnce('a'), 0);
      const wait = throttle.admit('a');
      waits.push(wait);
      clock.now += wait * 1000;
    }
    // Doubling, a little less as the count decays over the waits (whole seconds, rounded up).
    assert.deepEqual(waits.slice(0, 4), [1, 2, 4, 8]);
    for (let i = 4; i < 6; i++) {
      assert.ok(
        waits[i]! > 1.7 * waits[i - 1]! && waits[i]! <= 2 * waits[i - 1]!,
        `waits ${waits.join(' ')}`,
      );
    }
    assert.deepEqual(waits.slice(7), [60, 60, 60]);
    assert.equal(throttle.delayFor(LIMITS.freeFailures + 1), BASE_DELAY_MS);
    assert.equal(throttle.delayFor(LIMITS.freeFailures + 50), LIMITS.maxDelaySeconds * 1000);
  });

  it('refused attempts are not counted: honouring the wait costs nothing more', () => {
    const { clock, throttle, failOnce } = throttleAt();
    for (let i = 0; i < LIMITS.freeFailures + 1; i++) failOnce('a');
    const before = throttle.failures('a');
    for (let i = 0; i < 100; i++) assert.equal(throttle.admit('a'), 1);
    assert.equal(throttle.failures('a'), before);
    clock.now += 1000;
    assert.equal(throttle.admit('a'), 0);
    throttle.finish('a', false);
  });

  it('the count halves every half-life and the entry is forgotten once it has decayed away', () => {
    const { clock, throttle, failOnce } = throttleAt({ maxDelaySeconds: 1 });
    for (let i = 0; i < 8; i++) {
      failOnce('a');
      clock.now += 1000;
    }
    const start = throttle.failures('a');
    assert.ok(start > 7.9 && start <= 8, `count ${start}`);
    clock.now += LIMITS.halfLifeSeconds * 1000;
    assert.ok(Math.abs(throttle.failures('a') - start / 2) < 0.01);
    clock.now += 3 * LIMITS.halfLifeSeconds * 1000;
    assert.ok(Math.abs(throttle.failures('a') - start / 16) < 0.01);
    // Below the free failures again: the next failure earns no wait.
    assert.equal(failOnce('a'), 0);
    assert.equal(throttle.admit('a'), 0);
    throttle.finish('a', false);
    // Long after, a successful attempt drops the entry.
    clock.now += 20 * LIMITS.halfLifeSeconds * 1000;
    assert.equal(throttle.admit('a'), 0);
    throttle.finish('a', false);
    assert.equal(throttle.size, 0);
  });

  it('keys are independent: one throttled key does not slow another', () => {
    const { throttle, failOnce } = throttleAt();
    for (let i = 0; i < 10; i++) failOnce('attacker');
    assert.ok(throttle.admit('attacker') > 0);
    assert.equal(throttle.admit('neighbour'), 0);
    throttle.finish('neighbour', false);
  });

  it('counts attempts still running: a parallel burst cannot all start before the first failure lands', () => {
    const { throttle } = throttleAt();
    const admitted = Array.from({ length: 50 }, () => throttle.admit('burst')).filter((w) => w === 0);
    // As many as one after another: the free failures and the one that earns the first wait.
    assert.equal(admitted.length, LIMITS.freeFailures + 1);
    for (let i = 0; i < admitted.length; i++) throttle.finish('burst', true);
    assert.equal(throttle.admit('burst'), 1);
  });

  it('forgive clears a key (a user who proved their device)', () => {
    const { throttle, failOnce } = throttleAt();
    for (let i = 0; i < 6; i++) failOnce('user');
    assert.ok(throttle.admit('user') > 0);
    throttle.forgive('user');
    assert.equal(throttle.failures('user'), 0);
    assert.equal(throttle.admit('user'), 0);
    throttle.finish('user', false);
  });

  it('holds at most maxEntries keys, dropping the least recently active', () => {
    const { throttle, failOnce } = throttleAt({ maxEntries: 100 });
    for (let i = 0; i < 10; i++) failOnce('busy');
    for (let i = 0; i < 1000; i++) {
      failOnce(`10.0.${i >> 8}.${i & 255}`);
      // The busy key stays active, so it is never the one dropped.
      if (i % 50 === 0) throttle.admit('busy');
    }
    assert.equal(throttle.size, 100);
    assert.ok(throttle.failures('busy') > LIMITS.freeFailures);
    assert.equal(throttle.failures('10.0.0.0'), 0); // long dropped
    assert.ok(throttle.failures('10.0.3.231') > 0); // the most recent
  });

  it('refuses limits it cannot work with', () => {
    assert.throws(() => new FailureThrottle({ ...LIMITS, maxEntries: 0 }), RangeError);
    assert.throws(() => new FailureThrottle({ ...LIMITS, halfLifeSeconds: 0 }), RangeError);
    assert.throws(() => new FailureThrottle({ ...LIMITS, freeFailures: Number.NaN }), RangeError);
  });
});

describe('throttle key of a peer address', () => {
  it('IPv4 as it is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
    assert.equal(addressThrottleKey('127.0.0.2'), '127.0.0.2');
    assert.equal(addressThrottleKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(addressThrottleKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(addressThrottleKey('2001:db8:1:2::99'), '2001:db8:1:2::/64');
    assert.equal(addressThrottleKey('[2001:DB8:1:2:ffff::1]'), '2001:db8:1:2::/64');
    assert.equal(addressThrottleKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(addressThrottleKey('::1'), '0:0:0:0::/64');
    assert.equal(addressThrottleKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
    assert.equal(addressThrottleKey('?'), '?');
  });
});
