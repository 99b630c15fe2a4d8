#!/usr/bin/env python3
"""Turns criterion's medians into the ratio tables of BENCHMARKS.md.

Usage: bench_report.py CRITERION_DIR [JS_RESULTS_JSON ...] > section.md
"""
import json
import os
import platform
import subprocess
import sys


def median_ns(root, group, bench):
    path = os.path.join(root, group, bench, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def bench_dirs(root, group):
    """Criterion names directories after benchmark ids; read the real id from benchmark.json."""
    out = {}
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        return out
    for d in sorted(os.listdir(gdir)):
        meta = os.path.join(gdir, d, "new", "benchmark.json")
        if os.path.exists(meta):
            with open(meta) as f:
                out[json.load(f)["function_id"]] = median_ns(root, group, d)
    return out


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def machine():
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, {rustc}"


def table(results, ours, raw, peers):
    lines = ["| implementation | median | ours / this |", "|---|---|---|"]
    mine = results[ours]
    for name, ns in sorted(results.items(), key=lambda kv: kv[1]):
        ratio = mine / ns
        lines.append(f"| {name} | {fmt(ns)} | {ratio:.2f}x |")
    best_raw = min(results[r] for r in raw if r in results)
    best_peer = min(results[p] for p in peers if p in results)
    return lines, mine / best_raw, best_peer / mine


def main():
    root = sys.argv[1]
    out = [f"Machine: {machine()}.", ""]
    mint = bench_dirs(root, "mint")
    verify = bench_dirs(root, "verify")
    if mint:
        lines, vs_raw, vs_peer = table(
            mint,
            "pulsebeam-token",
            ["raw sign: aws-lc-rs", "raw sign: ed25519-dalek"],
            ["jsonwebtoken", "jwt-compact"],
        )
        out += ["### Rust: mint (create_token)", ""] + lines + [""]
        out.append(
            f"Ours / fastest raw Ed25519 sign: **{vs_raw:.2f}x** (target at most 1.25x). "
            f"Fastest peer / ours: **{vs_peer:.2f}x faster** (target at least 1.5x)."
        )
        out.append("")
    if verify:
        lines, vs_raw, vs_peer = table(
            verify,
            "pulsebeam-token",
            ["raw verify: aws-lc-rs", "raw verify_strict: ed25519-dalek"],
            ["jsonwebtoken", "jwt-compact"],
        )
        out += ["### Rust: verify", ""] + lines + [""]
        out.append(
            f"Ours / raw verify of our backend (aws-lc-rs): "
            f"**{verify['pulsebeam-token'] / verify['raw verify: aws-lc-rs']:.2f}x** "
            f"(target at most 1.15x). Fastest peer / ours: **{vs_peer:.2f}x**."
        )
        out.append("")
    parts = bench_dirs(root, "parts")
    if parts:
        out += ["### Rust: parts", "", "| operation | median |", "|---|---|"]
        out += [f"| {k} | {fmt(v)} |" for k, v in parts.items()]
        out.append("")
    for js in sys.argv[2:]:
        with open(js) as f:
            data = json.load(f)
        out += [f"### JS on {data['runtime']}", "", "| operation | median | ours / this |", "|---|---|---|"]
        for op in ("mint", "verify"):
            rows = data[op]
            mine = rows["@pulsebeam/server (wasm)"]
            for name, ns in sorted(rows.items(), key=lambda kv: kv[1]):
                out.append(f"| {op}: {name} | {fmt(ns)} | {mine / ns:.2f}x |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
