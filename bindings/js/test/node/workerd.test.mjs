// The package inside workerd (Cloudflare's runtime), driven by miniflare on loopback: the worker
// imports the `./workerd` entry point, whose wasm module is imported rather than read or fetched.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import * as jose from "jose";

const root = fileURLToPath(new URL("../../", import.meta.url));
const vectorsText = readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8");
const vectors = JSON.parse(vectorsText);
const { api_key: apiKey, api_secret: apiSecret, public_key_hex: publicKeyHex } = vectors.vectors[0];
const x = Buffer.from(publicKeyHex, "hex").toString("base64url");
const jwks = { keys: [{ kty: "OKP", crv: "Ed25519", x, kid: apiKey, alg: "EdDSA", use: "sig" }] };

let mf;

before(async () => {
  mf = new Miniflare({
    modulesRoot: root,
    modules: [
      { type: "ESModule", path: `${root}test/workerd/worker.js` },
      { type: "ESModule", path: `${root}test/suite.js` },
      { type: "ESModule", path: `${root}dist/workerd.js` },
      { type: "ESModule", path: `${root}dist/api.js` },
      { type: "ESModule", path: `${root}dist/pulsebeam.js` },
      { type: "CompiledWasm", path: `${root}dist/pulsebeam_bg.wasm` },
    ],
    compatibilityDate: "2025-01-01",
    bindings: { PULSEBEAM_API_KEY: apiKey, PULSEBEAM_API_SECRET: apiSecret, JWKS: JSON.stringify(jwks) },
    host: "127.0.0.1",
  });
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
});

test("the shared suite passes inside workerd", async (t) => {
  const response = await mf.dispatchFetch("http://localhost/suite", { method: "POST", body: vectorsText });
  assert.equal(response.status, 200, await response.clone().text());
  const results = await response.json();
  assert.ok(results.length >= 20, `only ${results.length} cases ran`);
  for (const result of results) {
    await t.test(result.name, () => {
      assert.ok(result.ok, result.error);
    });
  }
});

test("a worker mints a token that jose verifies, and verifies it back", async () => {
  const response = await mf.dispatchFetch("http://localhost/token?groupId=room1&peerId=alice");
  assert.equal(response.status, 200);
  const { token } = await response.json();
  const { payload, protectedHeader } = await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), { algorithms: ["EdDSA"] });
  assert.deepEqual(protectedHeader, { alg: "EdDSA", kid: apiKey });
  assert.equal(payload.gid, "room1");
  assert.equal(payload.pid, "alice");
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(payload.exp - (now + 3600)) <= 5, `exp ${payload.exp} is about now + 3600`);

  const verified = await mf.dispatchFetch("http://localhost/verify", { method: "POST", body: token });
  assert.equal(verified.status, 200);
  const claims = await verified.json();
  assert.equal(claims.keyId, apiKey);
  assert.equal(claims.groupId, "room1");
  assert.deepEqual(claims.allowPolicy, { groupPattern: "*", peerPattern: "*" });
});

test("a worker rejects bad input and tampered tokens with the package's codes", async () => {
  const bad = await mf.dispatchFetch("http://localhost/token?groupId=&peerId=alice");
  assert.equal(bad.status, 400);
  assert.deepEqual(await bad.json(), { code: "invalid_group_id", message: "group id is empty; give 1 to 16 characters" });

  const original = vectors.vectors[0].original_wallclock.token;
  const verified = await mf.dispatchFetch("http://localhost/verify", { method: "POST", body: original });
  assert.equal(verified.status, 200, "the original's token verifies in workerd");
  const tampered = original.slice(0, -2) + (original.endsWith("AA") ? "BA" : "AA");
  const rejected = await mf.dispatchFetch("http://localhost/verify", { method: "POST", body: tampered });
  assert.equal(rejected.status, 400);
  assert.equal((await rejected.json()).code, "invalid_signature");
});
