#!/usr/bin/env bash
# Runs the whole suite from the compiled tree. Used by `npm test` and .ci/run.
# Only *.test.js files are tests; test/support/ and */support/ hold helpers and child programs.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s build
# Style is part of the suite: lint and formatting fail the run like a test would.
npx eslint . && npx prettier --check . >/dev/null
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "run-all: no test files under dist/test" >&2; exit 1; }
# --test-force-exit: npm pcsclite can keep a native thread referenced after its context is closed,
# so a test file whose tests all passed may otherwise never exit (seen once in CI on bridge.test).
# --test-timeout: a test that hangs fails with its name instead of running into CI's limit.
exec node --test --test-concurrency=2 --test-force-exit --test-timeout=300000 "${files[@]}"
