#!/usr/bin/env bash
# The main job: build `pulsebeam` and run `pulsebeam dev`, a complete local system (signaling
# server, token endpoint, public keys, demo page) on http://127.0.0.1:3000/.
# Arguments go to `pulsebeam dev`, e.g. `scripts/dev.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/dev.sh: cargo not found; install Rust from https://rustup.rs and run this again" >&2
    exit 2
fi
cargo build --locked --release --quiet -p pulsebeam-cli
exec target/release/pulsebeam dev "$@"
