#!/usr/bin/env bash
# Loopback load runs with pulsebeam-load; writes the figures into BENCHMARKS.md between
# <!-- load:begin --> and <!-- load:end --> (the rest of the file is left alone).
#
#   scripts/load.sh                       # 50 pairs, 5 s per run, 5000 idle peers
#   PAIRS=100 SECONDS_EACH=10 IDLE_PEERS=10000 scripts/load.sh
#
# Everything runs on 127.0.0.1, bounded in time and count. Needs only cargo and python3.
set -euo pipefail

pairs="${PAIRS:-50}"
seconds="${SECONDS_EACH:-5}"
idle_peers="${IDLE_PEERS:-5000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Client and server each hold one descriptor per idle peer.
wanted=$((idle_peers + 1024))
if (( $(ulimit -n) < wanted )); then
    ulimit -n "$wanted" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

cargo build --locked --release -p pulsebeam-load
load="$root/target/release/pulsebeam-load"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "baseline: $((pairs * 2)) connections, ${seconds} s"
"$load" baseline --connections $((pairs * 2)) --duration "$seconds" --json >"$out/baseline.json"
echo "relay: $pairs pairs, ${seconds} s, as fast as Send returns"
"$load" relay --pairs "$pairs" --duration "$seconds" --json >"$out/relay.json"
half=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['messages_per_s'] / 2))" "$out/relay.json")
echo "relay: $pairs pairs, ${seconds} s, at $half msg/s (half the measured maximum)"
"$load" relay --pairs "$pairs" --duration "$seconds" --rate "$half" --json >"$out/paced.json"
echo "idle: $idle_peers peers"
"$load" idle --peers "$idle_peers" --json >"$out/idle.json"
"$load" idle --peers "$idle_peers" --stack-only --json >"$out/idle-stack.json"

python3 - "$out" "$root/BENCHMARKS.md" <<'PY'
import json, os, pathlib, platform, re, subprocess, sys, datetime

out, path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
r = {name: json.loads((out / f"{name}.json").read_text())
     for name in ("baseline", "relay", "paced", "idle", "idle-stack")}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
b, relay, paced, idle, stack = r["baseline"], r["relay"], r["paced"], r["idle"], r["idle-stack"]
ratio = relay["messages_per_s"] / b["requests_per_s"]
per_kib = idle["bytes_per_peer"] / 1024
verdict = lambda ok: "met" if ok else "**not met**"

section = f"""<!-- load:begin -->
## Signaling server under load (`scripts/load.sh`)

Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), {mem} RAM,
Linux {platform.release()}, {rustc}; release build. Server (child process) and load clients share
the cores, all on 127.0.0.1. Shared, noisy machine: read the ratios, not the absolute numbers.

| run | figure |
|---|---|
| baseline: empty handler, same stack, {b['connections']} connections | **{b['requests_per_s']:.0f} requests/s**, p50 {b['latency']['p50_ms']:.2f} ms, p99 {b['latency']['p99_ms']:.2f} ms |
| relay: {relay['pairs']} pairs, as fast as `Send` returns | **{relay['messages_per_s']:.0f} messages/s** ({ratio:.0%} of the baseline), p50 {relay['latency']['p50_ms']:.2f} ms, p99 {relay['latency']['p99_ms']:.2f} ms, max {relay['latency']['max_ms']:.2f} ms |
| relay: {paced['pairs']} pairs paced at {paced['target_rate']:.0f} msg/s (half the maximum) | {paced['messages_per_s']:.0f} messages/s, p50 {paced['latency']['p50_ms']:.2f} ms, **p99 {paced['latency']['p99_ms']:.2f} ms**, max {paced['latency']['max_ms']:.2f} ms |
| loss and order (both relay runs) | {relay['lost'] + paced['lost']} lost, {relay['out_of_order'] + paced['out_of_order']} out of order, of {relay['accepted'] + paced['accepted']} accepted; {relay['retried'] + paced['retried']} sends retried after 429/503 |
| server RSS during relay | {relay['server_rss_before_kib']} KiB before, {relay['server_rss_after_kib']} KiB after the max-rate run |
| idle: {idle['peers']} long-polling peers | **{idle['bytes_per_peer']:.0f} bytes per peer** ({per_kib:.1f} KiB), RSS {idle['rss_before_kib']} → {idle['rss_after_kib']} KiB |
| idle, for comparison: `axum::serve` with a handler that never answers | {stack['bytes_per_peer']:.0f} bytes per peer ({stack['bytes_per_peer']/1024:.1f} KiB) |

Targets on this 2-core machine:

- relay throughput ≥ 40% of the empty handler's requests/s: {ratio:.0%}, {verdict(ratio >= 0.4)}
- p99 relay latency < 20 ms at half that rate: {paced['latency']['p99_ms']:.2f} ms, {verdict(paced['latency']['p99_ms'] < 20)}
- < 16 KiB of server memory per idle long-polling peer: {per_kib:.1f} KiB, {verdict(per_kib < 16)}

Latency runs from the moment a message is due (its slot when paced, else the start of its
`Send`) to the decoding of the `Recv` answer that carries it; it includes the server's
`batch_window_ms` (5 ms by default). Each message is an ICE candidate of about 200 bytes.
The server runs on jemalloc, as the `pulsebeam` binary does, and serves HTTP/1 through its own
hyper connection loop (header and body timeouts, connection cap).
<!-- load:end -->"""

text = path.read_text() if path.exists() else "<!-- load:begin -->\n<!-- load:end -->\n"
pattern = re.compile(r"<!-- load:begin -->.*?<!-- load:end -->", re.S)
if not pattern.search(text):
    text = text.rstrip("\n") + "\n\n<!-- load:begin -->\n<!-- load:end -->\n"
path.write_text(pattern.sub(lambda _: section, text, count=1))
print(section)
PY
