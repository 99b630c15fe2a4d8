// Reads the output of the benchmarks (bench.mjs, workerd.mjs) on stdin and prints, per runtime,
// the ratios the package is held to: its time over a hand-written JWS on the runtime's own
// node:crypto (target: at most 1.3), and jose's time over its own (target: above 1).
//
//   node bench/summary.mjs < bench-output.txt
import { readFileSync } from "node:fs";

const lines = readFileSync(0, "utf8").split("\n");
const runs = [];
for (const line of lines) {
  const header = /^# (.+?): \d+ rounds/.exec(line);
  if (header) runs.push({ runtime: header[1].replace(/ \(miniflare.*\)/, ""), times: {} });
  // The last column: the contender's time over the package's, within a round (median of rounds).
  const row = /^(mint|verify)\s+(.+?)\s+median\s+[\d.]+ µs\/op\s+([\d.]+)x/.exec(line);
  if (row && runs.length) runs.at(-1).times[`${row[1]} ${row[2]}`] = Number(row[3]);
}
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}x` : "n/a");
// Each run's ratios are to the package's node:crypto backend (1 for the package itself).
console.log("# summary: the package's native backend (node:crypto) in each run above");
console.log("#   pkg/hand: its time over the hand-rolled node:crypto JWS (target at most 1.3)");
console.log("#   jose/pkg: jose's time over its time (target above 1)");
console.log(`${"runtime".padEnd(18)} ${"mint pkg/hand".padStart(14)} ${"mint jose/pkg".padStart(14)} ${"verify pkg/hand".padStart(16)} ${"verify jose/pkg".padStart(16)}`);
for (const { runtime, times } of runs) {
  const get = (op, name) => times[`${op} ${name}`];
  const pkg = (op) => get(op, "@pulsebeam/server (node:crypto)");
  const hand = (op) => get(op, "node:crypto sign (hand-rolled JWS)") ?? get(op, "node:crypto verify (hand-rolled JWS)");
  const jose = (op) => get(op, "jose SignJWT") ?? get(op, "jose jwtVerify");
  console.log(`${runtime.padEnd(18)} ${ratio(pkg("mint"), hand("mint")).padStart(14)} ${ratio(jose("mint"), pkg("mint")).padStart(14)} ${ratio(pkg("verify"), hand("verify")).padStart(16)} ${ratio(jose("verify"), pkg("verify")).padStart(16)}`);
}
