// The package's exports map: every entry point and condition resolves to the file made for it,
// and the entry points share one API.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as viaDefault from "@pulsebeam/server";
import * as viaNode from "@pulsebeam/server/node";

const root = fileURLToPath(new URL("../../", import.meta.url));
const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
const jsr = JSON.parse(readFileSync(new URL("../../jsr.json", import.meta.url), "utf8"));

const API = ["AccessToken", "KeyPair", "KeySet", "PeerClaims", "PeerPolicy", "PublicKey", "VerifiedClaims", "Verifier", "backend", "isPulseBeamError"];

/** Where `specifier` resolves from inside the package, with extra `conditions`. */
function resolve(specifier, conditions = []) {
  const flags = conditions.map((c) => `--conditions=${c}`);
  return execFileSync(process.execPath, [...flags, "--input-type=module", "-e", `console.log(import.meta.resolve(${JSON.stringify(specifier)}))`], {
    cwd: root,
    encoding: "utf8",
  }).trim().replace(`file://${root}`, "");
}

test("Node resolves the bare import and ./node to the same module", () => {
  assert.deepEqual(Object.keys(viaDefault).sort(), API);
  assert.equal(viaDefault.AccessToken, viaNode.AccessToken, "one module instance, not two");
});

test("each runtime condition selects its entry point", () => {
  assert.equal(resolve("@pulsebeam/server"), "dist/node.js");
  assert.equal(resolve("@pulsebeam/server", ["workerd"]), "dist/workerd.js");
  assert.equal(resolve("@pulsebeam/server", ["deno"]), "dist/deno.js");
  assert.equal(resolve("@pulsebeam/server", ["bun"]), "dist/node.js");
  for (const name of ["node", "deno", "workerd", "web"]) {
    assert.equal(resolve(`@pulsebeam/server/${name}`), `dist/${name}.js`, name);
  }
});

test("package.json and jsr.json agree, and every file they name is built", () => {
  for (const [subpath, target] of Object.entries(jsr.exports)) {
    const entry = pkg.exports[subpath];
    assert.ok(entry, `package.json exports ${subpath}`);
    // JSR has no conditions: its "." is the Node entry point, which Deno and Bun also run.
    assert.equal(typeof entry === "string" ? entry : subpath === "." ? entry.node : entry.default, target, subpath);
  }
  assert.equal(jsr.name, pkg.name);
  assert.equal(jsr.version, pkg.version);
  for (const entry of Object.values(pkg.exports)) {
    for (const file of typeof entry === "string" ? [entry] : Object.values(entry)) {
      assert.doesNotThrow(() => readFileSync(new URL(`../../${file}`, import.meta.url)), file);
    }
  }
  for (const name of ["node", "deno", "workerd", "web"]) {
    const source = readFileSync(new URL(`../../dist/${name}.js`, import.meta.url), "utf8");
    assert.match(source, /^\/\* @ts-self-types="\.\/api\.d\.ts" \*\//, `${name}.js names its types`);
    assert.match(source, /^export \* from "\.\/api\.js";$/m, `${name}.js exports the shared API`);
  }
  const workerd = readFileSync(new URL("../../dist/workerd.js", import.meta.url), "utf8")
    .split("\n").filter((line) => !line.startsWith("//")).join("\n");
  assert.doesNotMatch(workerd, /import\.meta\.url|node:fs|fetch\(/, "workerd.js neither reads files nor fetches");
});

test("CommonJS code can require() the Node entry point (no top-level await in it)", () => {
  const out = execFileSync(process.execPath, ["-e", `
    const { AccessToken, PeerClaims, PeerPolicy } = require("@pulsebeam/server");
    const claims = new PeerClaims("g", "p");
    claims.setAllowPolicy(new PeerPolicy("*", "*"));
    const app = new AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67");
    console.log(app.createToken(claims, 60).split(".").length);
  `], { cwd: root, encoding: "utf8" });
  assert.equal(out.trim(), "3");
});
