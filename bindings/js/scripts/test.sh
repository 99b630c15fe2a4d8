#!/usr/bin/env bash
# Builds the @pulsebeam/server package and runs its tests for real on Deno, Bun, workerd
# (through miniflare, on loopback), headless Chromium and Node, with Node's test runner last so
# that its summary closes the output.
# Exits non-zero if the build or any runtime's tests fail. Every step is bounded in time.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
log() { printf 'test.sh: %s\n' "$*" >&2; }
failed=()
step() { # step NAME SECONDS COMMAND...
  local name="$1" seconds="$2"
  shift 2
  log "$name"
  if ! timeout --kill-after=10 "$seconds" "$@"; then
    failed+=("$name")
    log "FAILED: $name"
  fi
}

timeout 1800 bash scripts/build.sh || { log "FAILED: build"; exit 1; }

# Test dependencies (deno, bun, miniflare with workerd, jose) exactly as package-lock.json pins.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  log "npm ci"
  timeout 600 npm ci --no-audit --no-fund --loglevel=error || { log "FAILED: npm ci"; exit 1; }
fi
bin="$here/node_modules/.bin"

# Debian's Chromium, for the `./web` entry point in a real browser (test/node/browser.test.mjs).
if ! command -v chromium >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { log "chromium is missing: as root, apt-get install chromium"; exit 1; }
  log "installing Debian's chromium"
  timeout 900 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || { log "FAILED: apt-get install chromium"; exit 1; }
fi
export CHROMIUM_PATH="$(command -v chromium)"

# The Rust crate run natively (examples/), which the interop and parity tests compare against.
timeout 900 cargo build --quiet --locked --examples || { log "FAILED: building the examples"; exit 1; }

export NO_COLOR=1
step "deno: type-check the shipped declarations" 300 "$bin/deno" check --quiet test/types/usage.ts
step "deno: tests" 300 "$bin/deno" test --quiet --no-prompt --allow-read=.,../../testdata test/deno/
step "bun: tests" 300 "$bin/bun" test test/bun/
step "node: tests (and workerd through miniflare, Chromium through playwright-core)" 600 \
  node --test test/node/*.test.mjs

if [ "${#failed[@]}" -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
