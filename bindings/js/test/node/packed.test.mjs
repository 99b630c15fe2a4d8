// The package as users get it: `npm pack`, installed into a fresh project, imported by name
// from Node, Bun and Deno, each through its own export condition.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = join(root, "node_modules", ".bin");
const vector = JSON.parse(readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8")).vectors[1];
let project;

const consumer = `
import { AccessToken, PeerClaims, PeerPolicy, Verifier } from "@pulsebeam/server";
const v = ${JSON.stringify(vector)};
const claims = new PeerClaims(v.inputs.group_id, v.inputs.peer_id);
claims.setAllowPolicy(new PeerPolicy(v.inputs.allow_policy.group_id, v.inputs.allow_policy.peer_id));
const app = new AccessToken(v.api_key, v.api_secret);
const { token } = app.mint(claims, { ttlSeconds: v.fixed_clock.duration_secs, nowUnix: v.fixed_clock.now_unix });
const verified = Verifier.fromJwks({ keys: [app.publicKey.toJwk(v.api_key)] }).verify(v.original_wallclock.token);
console.log(JSON.stringify({ golden: token === v.fixed_clock.token, peerId: verified.peerId }));
`;

before(() => {
  project = mkdtempSync(join(tmpdir(), "pulsebeam-consumer-"));
  const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", project], { cwd: root, encoding: "utf8" }));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", join(project, packed[0].filename)], { cwd: project });
  writeFileSync(join(project, "main.js"), consumer);
});

after(() => {
  if (project) rmSync(project, { recursive: true, force: true });
});

test("the packed tarball holds the built package and nothing else", () => {
  const files = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: root, encoding: "utf8" }))[0].files.map((f) => f.path).sort();
  assert.ok(files.includes("dist/pulsebeam_bg.wasm"));
  for (const entry of ["node", "deno", "workerd", "web", "api"]) assert.ok(files.includes(`dist/${entry}.js`), entry);
  assert.deepEqual(files.filter((f) => !f.startsWith("dist/")), ["README.md", "jsr.json", "package.json"]);
});

for (const [runtime, command] of [["node", () => [process.execPath, ["main.js"]]], ["bun", () => [join(bin, "bun"), ["main.js"]]],
  ["deno", () => [join(bin, "deno"), ["run", "--quiet", "--no-prompt", "--allow-read=.", "main.js"]]]]) {
  test(`an installed copy mints the golden token and verifies the original's on ${runtime}`, () => {
    const [file, args] = command();
    const out = execFileSync(file, args, { cwd: project, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
    assert.deepEqual(JSON.parse(out.trim()), { golden: true, peerId: vector.inputs.peer_id });
  });
}
