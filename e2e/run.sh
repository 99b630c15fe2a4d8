#!/usr/bin/env bash
# End-to-end tests: headless Chromium pages against `pulsebeam dev`, and a real coturn.
#
# Installs what is missing (Debian's chromium, coturn and redis-server, the pinned npm packages), builds
# the dev server, and runs the tests with Node's test runner. When the machine allows it, the
# tests run in a fresh network namespace that has only a loopback interface, so no test traffic
# can leave the machine. Environment: E2E_VERBOSE=1 prints every page's log; PULSEBEAM_DEV_BIN
# (+ PULSEBEAM_DEV_SUBCOMMAND) use an already built binary.
set -euo pipefail
cd "$(dirname "$0")"
repo="$(cd .. && pwd)"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ((${#missing[@]})); then
  echo "e2e: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Every pinned package: a checkout from before one was added has the others only.
if ! node -e "for (const p of ['playwright-core', '@protobuf-ts/grpcweb-transport', '@protobuf-ts/runtime-rpc', '@protobuf-ts/runtime']) require.resolve(p)" >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi

if [ -z "${PULSEBEAM_DEV_BIN:-}" ]; then
  # The tests start the server as a developer would: `pulsebeam dev`.
  target="${CARGO_TARGET_DIR:-$repo/target}"
  (cd "$repo" && cargo build --quiet --locked -p pulsebeam-cli --bin pulsebeam)
  export PULSEBEAM_DEV_BIN="$target/debug/pulsebeam"
  export PULSEBEAM_DEV_SUBCOMMAND="dev"
fi

tests=(tests/*.test.mjs)
run_tests() {
  node --test --test-concurrency=1 --test-timeout=180000 "${tests[@]}"
}

# A network namespace with only `lo`: needs root (or user namespaces) and iproute2.
if [ "${E2E_NO_NETNS:-}" != 1 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
  && unshare --net true 2>/dev/null; then
  export E2E_TESTS="${tests[*]}"
  exec unshare --net bash -c 'ip link set lo up && node --test --test-concurrency=1 --test-timeout=180000 $E2E_TESTS'
else
  echo "e2e: no network namespace available; running on the host (traffic stays on 127.0.0.1)"
  run_tests
fi
