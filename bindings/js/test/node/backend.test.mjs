// A cold start costs what it costs on the wasm backend: the package does not load node:crypto at
// import; objects made without a `backend` option start on wasm and move to the runtime's own
// Ed25519 after 64 calls in the process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));

function run(source) {
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", source], { cwd: root, encoding: "utf8" });
  return JSON.parse(out);
}

const setup = `
  import * as api from "@pulsebeam/server";
  const app = new api.AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67");
  const keys = new api.KeySet();
  keys.add(app.apiKey, app.publicKey);
  const verifier = new api.Verifier(keys);
  const claims = new api.PeerClaims("g", "p");
  claims.setAllowPolicy(api.PeerPolicy.allowAll());
  const mint = () => app.mint(claims, { ttlSeconds: 60, nowUnix: 1800000000 }).token;
  const state = () => [app.backend, verifier.backend];
`;

test("import and the first calls do not load node:crypto; the 65th call runs on it, with the same tokens", () => {
  const result = run(`
    const before = process.moduleLoadList.filter((m) => m.includes("crypto")).length;
    ${setup}
    const seen = [];
    const tokens = new Set();
    for (let i = 0; i < 40; i++) {
      const token = mint();
      tokens.add(token);
      verifier.verifyAt(token, 1800000001);
      seen.push(state().join());
      if (i === 0) seen.push(process.moduleLoadList.filter((m) => m.includes("crypto")).length - before);
    }
    console.log(JSON.stringify({ backend: api.backend, cryptoModulesLoadedByFirstCalls: seen[1], first: seen[0], at32: seen[32], at33: seen[33], tokens: tokens.size }));
  `);
  assert.deepEqual(result, { backend: "node:crypto", cryptoModulesLoadedByFirstCalls: 0, first: "wasm,wasm", at32: "wasm,wasm", at33: "node:crypto,node:crypto", tokens: 1 });
});
