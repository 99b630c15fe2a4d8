// Memory stays flat when the package is used as the original API is used: claims and a policy
// made anew for every token and never freed, a token minted and verified each time, the event
// loop turning. Each runtime runs the loop in a fresh process (workerd inside miniflare), and the
// resident set size after the loop must be within 10 MiB of where it was after a warm-up chunk.
//
// PULSEBEAM_MEMORY_ITERATIONS sets the iterations per runtime (each one mint and one verify);
// the default keeps the whole test suite short.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startWorker } from "./workerd.mjs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const iterations = Number(process.env.PULSEBEAM_MEMORY_ITERATIONS ?? 100_000);
const MiB = 1024 * 1024;
const bin = `${root}node_modules/.bin`;

function report(runtime, { before, after, seconds, backend, count }) {
  const line = `${runtime} (${backend}): ${count} mints + ${count} verifies, RSS ${(before / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB in ${seconds.toFixed(1)} s`;
  console.log(`# ${line}`);
  return line;
}

const runtimes = [
  ["node", process.execPath, ["test/memory/churn.mjs"]],
  ["bun", `${bin}/bun`, ["test/memory/churn.mjs"]],
  ["deno", `${bin}/deno`, ["run", "--quiet", "--allow-read=.", "test/memory/churn.mjs"]],
];

for (const [runtime, command, args] of runtimes) {
  for (const backend of ["node:crypto", "wasm"]) {
    // The wasm backend is the slower one; a fifth of the iterations shows the same flatness.
    const count = backend === "wasm" ? Math.floor(iterations / 5) : iterations;
    test(`${runtime} on ${backend}: RSS stays within 10 MiB over ${count} mints and verifies without free()`, () => {
      const out = execFileSync(command, [...args, String(count), backend], { cwd: root, encoding: "utf8", timeout: 900_000 });
      const result = JSON.parse(out.trim().split("\n").at(-1));
      const line = report(runtime, { ...result, count });
      assert.equal(result.checked, count, "every token verified");
      assert.equal(result.backend, backend);
      assert.ok(result.after - result.before <= 10 * MiB, line);
    });
  }
}

/** The resident set size of the workerd process that miniflare started. */
function workerdRss() {
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid || !stat.includes("(workerd)")) continue;
      const kib = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
      return kib * 1024;
    } catch {
      // The process went away while being read.
    }
  }
  throw new Error("no workerd process found under this one");
}

test(`workerd (nodejs_compat): RSS stays within 10 MiB over ${iterations} mints and verifies without free()`, { skip: process.platform !== "linux" && "reads /proc" }, async () => {
  const mf = await startWorker(["nodejs_compat"], "node:crypto");
  try {
    const churn = async (count) => {
      const response = await mf.dispatchFetch("http://localhost/churn", { method: "POST", body: JSON.stringify({ iterations: count }) });
      assert.equal(response.status, 200, await response.clone().text());
      return response.json();
    };
    const chunk = 10_000;
    const warmup = Math.min(20_000, iterations);
    for (let done = 0; done < warmup; done += chunk) await churn(chunk);
    const before = workerdRss();
    const start = performance.now();
    let backend;
    for (let done = warmup; done < iterations; done += chunk) {
      const result = await churn(Math.min(chunk, iterations - done));
      backend = result.backend;
    }
    const after = workerdRss();
    const line = report("workerd", { before, after, seconds: (performance.now() - start) / 1000, backend, count: iterations });
    assert.equal(backend, "node:crypto");
    assert.ok(after - before <= 10 * MiB, line);
  } finally {
    await mf.dispose();
  }
});
