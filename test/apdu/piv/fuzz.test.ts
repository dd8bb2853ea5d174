import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PivApduFuzzer } from '../../../fuzz/piv-apdu.js';

/**
 * The PIV card's fuzz property (fuzz/piv-apdu.ts) at CI depth: every command answered with an
 * allowed ISO status word, no state change on errors. `npm run fuzz` runs the same property with
 * 1 000 000 commands (bench/fuzz-depth.ts).
 */

/**
 * Number of APDUs; override with CARDLINK_PIV_FUZZ_CASES (CI default 100000, about 25 s).
 * CARDLINK_PIV_FUZZ_VERBOSE=1 prints the mix of status words seen.
 */
const FUZZ_CASES = Number(process.env.CARDLINK_PIV_FUZZ_CASES ?? 100_000);
/** fast-check seed; override with CARDLINK_PIV_FUZZ_SEED to replay a failure. */
const SEED = process.env.CARDLINK_PIV_FUZZ_SEED ? Number(process.env.CARDLINK_PIV_FUZZ_SEED) : undefined;

describe('PIV card fuzzing', () => {
  it(
    `answers ${FUZZ_CASES} random and mutated APDUs with a status word and no state change on errors`,
    { timeout: 600_000 },
    async () => {
      const fuzzer = await PivApduFuzzer.create();
      await fc.assert(
        fc.asyncProperty(fuzzer.commands, async (command) => {
          const verdict = await fuzzer.check(command);
          if (!verdict.ok) assert.fail(`${verdict.kind}: ${verdict.detail}`);
        }),
        // No shrinking: the card carries state from one case to the next.
        { numRuns: FUZZ_CASES, endOnFailure: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
      );
      if (process.env.CARDLINK_PIV_FUZZ_VERBOSE) console.log(Object.fromEntries(fuzzer.counts));
      assert.equal(fuzzer.cases, FUZZ_CASES);
      // The run must have reached the command handlers, not only framing errors.
      assert.equal(fuzzer.coverageProblem(), undefined);
    },
  );
});
