#!/usr/bin/env bash
# Runs every benchmark; each writes its JSON result to bench/results/, then bench/report.ts writes
# latest.json, latest.md and c_sign-latency.svg from them. Needs the test set-up
# (bash test/prepare-machine.sh) and root (private pcscd instances).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s build
node dist/bench/pcsc-roundtrip.js
node dist/bench/pkcs11-test-login.js 3
node dist/bench/card-command-cpu.js
(ulimit -n 65536 2>/dev/null || true; node dist/bench/server-throughput.js)
node dist/bench/daemon-chain.js
node dist/bench/daemon-idle-rss.js
node dist/bench/demo-startup.js --runs 5
node dist/bench/personalization.js
node dist/bench/report.js
