#!/usr/bin/env bash
# Runs the token benchmarks (Rust, criterion; JS, on Node, Bun and Deno) next to their peers and
# writes medians and ratios into BENCHMARKS.md. Not part of the tests: nothing here asserts a
# time. The machines are shared and noisy; read the ratios, measured side by side in one run.
#
#   scripts/bench.sh           full run (about 10 minutes)
#   scripts/bench.sh --quick   shorter measurement
set -euo pipefail
cd "$(dirname "$0")/.."
measure=8
js_args=()
if [ "${1:-}" = "--quick" ]; then
    measure=3
    js_args=(--quick)
fi
rm -rf target/criterion/mint target/criterion/verify target/criterion/parts
cargo bench --locked -p pulsebeam-token --bench tokens -- --warm-up-time 2 --measurement-time "$measure"
js_out=target/bench-js.txt
bash bindings/js/scripts/bench.sh "${js_args[@]}" | tee "$js_out"
python3 scripts/bench_report.py target/criterion --js "$js_out" --write BENCHMARKS.md
echo "wrote BENCHMARKS.md"
