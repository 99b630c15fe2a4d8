// Cold start on Node, Bun and Deno: import + first mint in a fresh process (bench/cold.mjs), for
// the default (which starts on wasm, as the package did before it used node:crypto), the wasm
// backend, and node:crypto loaded at once. Runs interleaved; prints the median of each.
//
//   node bench/coldstart.mjs [--quick]
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { median } from "./contenders.js";

const root = fileURLToPath(new URL("../", import.meta.url));
const runs = process.argv.includes("--quick") ? 5 : 21;
const bin = `${root}node_modules/.bin`;
const runtimes = {
  [`node ${process.versions.node}`]: [process.execPath, ["bench/cold.mjs"]],
  bun: [`${bin}/bun`, ["bench/cold.mjs"]],
  deno: [`${bin}/deno`, ["run", "--quiet", "--allow-read=.", "bench/cold.mjs"]],
};
const choices = ["default", "wasm", "node:crypto"];
console.log(`# cold start: import + first createToken in a fresh process, median of ${runs} runs (interleaved)`);
for (const [name, [command, args]] of Object.entries(runtimes)) {
  const samples = Object.fromEntries(choices.map((c) => [c, []]));
  for (let i = 0; i < runs; i++) {
    for (const choice of choices) {
      samples[choice].push(Number(execFileSync(command, [...args, choice], { cwd: root, encoding: "utf8" }).trim()));
    }
  }
  for (const choice of choices) {
    // Within each round (the three runs back to back), then the median over the rounds.
    const ratio = median(samples[choice].map((ms, round) => ms / samples.wasm[round]));
    console.log(`cold   ${name.padEnd(12)} ${choice.padEnd(12)} median ${median(samples[choice]).toFixed(1).padStart(6)} ms   ${ratio.toFixed(2)}x wasm's`);
  }
}
