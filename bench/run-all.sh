#!/usr/bin/env bash
# Runs every benchmark; each writes its JSON result to bench/results/, then bench/report.ts writes
# latest.json, latest.md and c_sign-latency.svg from them. Needs the test set-up
# (bash test/prepare-machine.sh) and root (private pcscd instances).
#
# The whole run's duration and each step's go to bench/results/run-all.json (the report's row
# "npm run bench, whole run"; issue 17: under 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

# The build the daemon's idle RSS is compared with in the same run: the last commit before the
# daemon's start was trimmed to what an idle daemon needs (docs/performance.md). Extracted and built
# once, outside the tree. (The older anchor, d81dc76, no longer runs on this tree's node_modules: it
# loads node-forge, which cardlink no longer depends on.)
BASELINE_COMMIT=abfa864
BASELINE_DIR="${CARDLINK_BENCH_BASELINE_DIR:-/var/tmp/cardlink-bench-$BASELINE_COMMIT}"
# How long the whole run may take (issue 17).
TARGET_SECONDS=600

# Seconds since $1 (a $EPOCHREALTIME), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

run_start=$EPOCHREALTIME
load_start=$(cut -d' ' -f1 /proc/loadavg)
steps=()
step() {
  local name=$1
  shift
  local t0=$EPOCHREALTIME
  "$@"
  steps+=("{\"step\":\"$name\",\"seconds\":$(since "$t0")}")
}

baseline() {
  # Built before, and its node_modules link still leads somewhere (a removed checkout leaves it dangling).
  if [ ! -f "$BASELINE_DIR/dist/bin/main.js" ] || [ ! -d "$BASELINE_DIR/node_modules/" ]; then
    rm -rf "$BASELINE_DIR"
    mkdir -p "$BASELINE_DIR"
    git archive "$BASELINE_COMMIT" | tar -x -C "$BASELINE_DIR"
    ln -s "$PWD/node_modules" "$BASELINE_DIR/node_modules"
    (cd "$BASELINE_DIR" && node_modules/.bin/tsc -p tsconfig.json)
  fi
}

step build npm run -s build
step baseline-build baseline
step pcsc-roundtrip node dist/bench/pcsc-roundtrip.js
step pkcs11-test-login node dist/bench/pkcs11-test-login.js 3
step card-command-cpu node dist/bench/card-command-cpu.js
step server-throughput bash -c 'ulimit -n 65536 2>/dev/null || true; exec node dist/bench/server-throughput.js'
step daemon-chain node dist/bench/daemon-chain.js
step daemon-idle-rss node dist/bench/daemon-idle-rss.js --compare "$BASELINE_COMMIT=$BASELINE_DIR"
step demo-startup node dist/bench/demo-startup.js --runs 5
step personalization node dist/bench/personalization.js

seconds=$(since "$run_start")
pass=$(awk -v s="$seconds" -v t="$TARGET_SECONDS" 'BEGIN { print (s < t) ? "true" : "false" }')
cat >bench/results/run-all.json <<EOF
{
  "benchmark": "run-all",
  "command": "npm run bench",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": { "cpus": $(nproc), "loadavg_1m_start": $load_start, "loadavg_1m_end": $(cut -d' ' -f1 /proc/loadavg) },
  "seconds": $seconds,
  "target_seconds": $TARGET_SECONDS,
  "pass": $pass,
  "steps": [$(IFS=,; echo "${steps[*]}")]
}
EOF
node dist/bench/report.js
