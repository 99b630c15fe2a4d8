#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS each (default 15), seeded from testdata/.
#
#   scripts/fuzz.sh            # the short run CI does
#   scripts/fuzz.sh 3600       # an hour per target
#   scripts/fuzz.sh 600 policy # one target
#
# Installs cargo-fuzz if it is missing. On a stable toolchain it sets RUSTC_BOOTSTRAP=1: cargo-fuzz
# only needs the -Z flags for sanitizer coverage, which stable rustc has but does not expose.
# A crash stops nothing: every target runs, the failures are listed at the end, and the input
# that crashed is kept in fuzz/artifacts/<target>/ (replay: cd fuzz && cargo fuzz run <target> <file>).
set -euo pipefail

seconds="${1:-15}"
only="${2:-}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET]; SECONDS is a whole number" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo_fuzz_version="0.13.2"
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

cd "$root/fuzz"
# cargo fuzz has no --locked of its own: check that fuzz/Cargo.lock matches the manifests (its
# own and the crates it builds) first, so a stale lock fails here instead of being rewritten.
if ! cargo metadata --locked --format-version 1 >/dev/null; then
    echo "fuzz/Cargo.lock is out of date; update it (cd fuzz && cargo update -w) and commit it" >&2
    exit 1
fi
python3 make_seeds.py
started=$(date +%s)
cargo fuzz build
echo "built the fuzz targets in $(( $(date +%s) - started )) s"

targets="$(cargo fuzz list)"
if [[ -n "$only" ]] && ! grep -qx "$only" <<<"$targets"; then
    echo "no fuzz target named $only; the targets are: $(tr '\n' ' ' <<<"$targets")" >&2
    exit 2
fi
mkdir -p artifacts logs
failed=()
for target in $targets; do
    if [[ -n "$only" && "$target" != "$only" ]]; then
        continue
    fi
    log="logs/$target.log"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or blow-up is a failure.
    if cargo fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
        echo "fuzz $target: ok, $runs inputs in ${seconds} s, ${cov:-cov: ?}"
    else
        echo "fuzz $target: FAILED (log: fuzz/$log)"
        tail -n 40 "$log" >&2
        failed+=("$target")
    fi
done
if (( ${#failed[@]} )); then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
