// The benchmark inside workerd (Cloudflare's runtime, through miniflare on loopback, with
// nodejs_compat): the same contenders as bench/bench.mjs. Each batch runs in one request and is
// timed from outside, less the time of an empty request (the median of many).
//
//   node bench/workerd.mjs [--quick]
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { measure, median } from "./contenders.js";

const root = fileURLToPath(new URL("../", import.meta.url));
const quick = process.argv.includes("--quick");
const rounds = quick ? 5 : 31;
const batch = quick ? 100 : 300;

const mf = new Miniflare({
  modulesRoot: root,
  modules: true,
  scriptPath: `${root}bench/worker.js`,
  modulesRules: [{ type: "ESModule", include: ["**/*.js"] }, { type: "CompiledWasm", include: ["**/*.wasm"] }],
  compatibilityDate: "2025-01-01",
  compatibilityFlags: ["nodejs_compat"],
  host: "127.0.0.1",
});
try {
  await mf.ready;
  const names = await (await mf.dispatchFetch("http://localhost/names")).json();
  const call = async (query) => {
    const start = performance.now();
    const response = await mf.dispatchFetch(`http://localhost/run?${query}`);
    await response.text();
    return performance.now() - start;
  };
  const empty = [];
  for (let i = 0; i < 50; i++) empty.push(await call("count=0"));
  const overhead = median(empty);
  const ops = {
    mint: Object.fromEntries(names.mint.map((n) => [n, null])),
    verify: Object.fromEntries(names.verify.map((n) => [n, null])),
  };
  await measure({
    ops,
    base: names.base,
    rounds,
    batch,
    runtime: `workerd (miniflare ${JSON.parse(readFileSync(`${root}node_modules/miniflare/package.json`, "utf8")).version}, nodejs_compat)`,
    print: console.log,
    time: async (op, name) => {
      const ms = await call(`op=${op}&name=${encodeURIComponent(name)}&count=${batch}`);
      return (Math.max(ms - overhead, 0) * 1e6) / batch;
    },
  });
} finally {
  await mf.dispose();
}
