#!/usr/bin/env python3
"""Turns criterion's medians into the ratio tables of BENCHMARKS.md.

Usage: bench_report.py CRITERION_DIR [--js JS_OUTPUT_TXT] [--write BENCHMARKS.md]

Without --write the section is printed; with it, the section replaces what stands between the
`<!-- tokens:begin -->` and `<!-- tokens:end -->` markers of the file (created if missing),
leaving every other section (such as the load tests') as it is.
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


def report(root, js_output):
    out = ["## Access tokens: mint and verify (`scripts/bench.sh`)", "", f"Machine: {machine()}.", ""]
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
            f"Ours / raw verify_strict of our backend (ed25519-dalek): "
            f"**{verify['pulsebeam-token'] / verify['raw verify_strict: ed25519-dalek']:.2f}x** "
            f"(target at most 1.15x). Fastest peer / ours: **{vs_peer:.2f}x**."
        )
        out.append("")
        out.append(
            "Ours uses strict verification (`verify_strict`: it decompresses `R` to refuse "
            "small-order points); jwt-compact calls ed25519-dalek's non-strict `verify`, which "
            "skips that work, and jsonwebtoken AWS-LC's verify."
        )
        out.append("")
    parts = bench_dirs(root, "parts")
    if parts:
        out += ["### Rust: parts", "", "| operation | median |", "|---|---|"]
        out += [f"| {k} | {fmt(v)} |" for k, v in parts.items()]
        out.append("")
    if js_output:
        with open(js_output) as f:
            text = f.read().strip()
        out += [
            "### JS: `@pulsebeam/server` next to jose and the runtime's own crypto",
            "",
            "Output of `bindings/js/scripts/bench.sh`, one block per runtime; ratios are the",
            "contender's time over the package's (above 1: the package is faster).",
            "",
            "```",
            text,
            "```",
            "",
        ]
    return "\n".join(out)


def splice(path, section):
    begin, end = "<!-- tokens:begin -->", "<!-- tokens:end -->"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n" + begin + "\n" + end + "\n"
    if begin not in text or end not in text:
        text = text.rstrip() + "\n\n" + begin + "\n" + end + "\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + section.strip() + "\n" + end + tail)


if __name__ == "__main__":
    args = sys.argv[1:]
    js_output = write = None
    if "--js" in args:
        k = args.index("--js")
        js_output = args[k + 1]
        del args[k : k + 2]
    if "--write" in args:
        k = args.index("--write")
        write = args[k + 1]
        del args[k : k + 2]
    section = report(args[0], js_output)
    if write:
        splice(write, section)
    else:
        print(section)
