#!/usr/bin/env bash
# Benchmarks createToken and verify of the built package (on each backend) next to jose and
# node:crypto, on Node, Bun, Deno (bench/bench.mjs) and workerd (bench/workerd.mjs, through
# miniflare with nodejs_compat), and cold starts (bench/coldstart.mjs). Not part of the tests.
# Pass --quick for a short run.
# The machines are shared and noisy: read the ratios within one runtime's run, not the times.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/build.sh
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export NO_COLOR=1
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
{
  timeout 600 node bench/bench.mjs "$@"
  timeout 600 node_modules/.bin/bun bench/bench.mjs "$@"
  timeout 600 node_modules/.bin/deno run --quiet --allow-read=.,../../testdata --allow-env bench/bench.mjs "$@"
  timeout 600 node bench/workerd.mjs "$@"
} | tee "$out"
node bench/summary.mjs < "$out"
timeout 600 node bench/coldstart.mjs "$@"
