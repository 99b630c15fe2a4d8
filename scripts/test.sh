#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need (apt, npm, cargo tools).
# This is the README's test command and what CI runs. Each step runs even when an earlier one
# failed, so one run shows every problem; the exit code is non-zero if any step failed.
#
#   scripts/test.sh            all steps
#   scripts/test.sh rust js    only the named steps (rust, backends, interop, js, e2e, fuzz, deploy)
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export DEBIAN_FRONTEND=noninteractive
FUZZ_SECONDS="${FUZZ_SECONDS:-15}"

passed=()
failed=()

step() {
    local name="$1"
    shift
    if [ "${#selected[@]}" -gt 0 ] && [[ ! " ${selected[*]} " == *" $name "* ]]; then
        return
    fi
    echo
    echo "==> $name: $*"
    local start=$SECONDS
    if "$@"; then
        passed+=("$name")
        echo "<== $name passed in $((SECONDS - start)) s"
    else
        failed+=("$name")
        echo "<== $name FAILED after $((SECONDS - start)) s"
    fi
}

# Every cargo build here is --locked: a Cargo.lock that no longer matches the manifests fails
# the run loudly instead of being rewritten behind the developer's back. The Redis store's tests
# and the multi-node tests need a standalone Redis, a Redis Cluster, a TLS-only Redis and a
# Sentinel set: scripts/redis.sh starts throwaway ones (installing redis-server if missing, about
# 6 s) and they are stopped when the step ends.
rust() {
    cargo fmt --all -- --check &&
        cargo clippy --locked --workspace --all-targets -- -D warnings &&
        (
            trap 'bash scripts/redis.sh stop' EXIT
            redis_env="$(bash scripts/redis.sh start)" || exit 1
            eval "$redis_env"
            export PULSEBEAM_REQUIRE_REDIS=1
            cargo test --locked --workspace
        )
}

# The token crate on its other crypto backend (pure-Rust ed25519-dalek, as on wasm): the same
# golden vectors and property tests.
backends() {
    cargo clippy --locked -p pulsebeam-token --all-targets --no-default-features -- -D warnings &&
        cargo test --locked -p pulsebeam-token --no-default-features
}

# Tokens we mint, verified by an independent JOSE implementation given only our JWKS.
interop() {
    local out
    out="$(mktemp)"
    (cd tests/interop && npm ci --no-audit --no-fund) &&
        cargo run --locked -q -p pulsebeam-token --example interop >"$out" &&
        node tests/interop/verify.mjs "$out"
}

selected=("$@")
step rust rust
step backends backends
step interop interop
step js bash bindings/js/scripts/test.sh
step e2e bash e2e/run.sh
step fuzz bash scripts/fuzz.sh "$FUZZ_SECONDS"
step deploy bash scripts/deploy-check.sh

echo
echo "passed steps: ${passed[*]:-none}"
echo "failed steps: ${failed[*]:-none}"
echo "steps: ${#passed[@]} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
