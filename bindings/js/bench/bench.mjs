// createToken and verify of the package (on each backend the runtime has), next to jose and to a
// hand-written JWS on the runtime's own node:crypto Ed25519, measured side by side in one
// process. Runs on Node, Bun and Deno (bench/workerd.mjs runs the same inside workerd); prints
// the median time per operation and each contender's ratio to the package's default backend.
//
//   node bench/bench.mjs | bun bench/bench.mjs | deno run -A bench/bench.mjs   [--quick]
import * as crypto from "node:crypto";
import { Buffer } from "node:buffer";
import * as jose from "jose";
import { contenders, measure, repeat } from "./contenders.js";

const api = typeof Deno !== "undefined" ? await import("../dist/deno.js") : await import("@pulsebeam/server");
const runtime = typeof Deno !== "undefined" ? `deno ${Deno.version.deno}`
  : typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process.versions.node}`;
const quick = (typeof Deno !== "undefined" ? Deno.args : process.argv).includes("--quick");
const rounds = quick ? 5 : 31;
const batch = quick ? 100 : 300;

const { mint, verify, base } = await contenders({ api, jose, crypto, Buffer });
const ops = { mint, verify };
await measure({
  ops,
  base,
  rounds,
  batch,
  runtime,
  print: console.log,
  time: async (op, name) => {
    const start = performance.now();
    await repeat(ops[op][name], batch);
    return ((performance.now() - start) * 1e6) / batch;
  },
});
