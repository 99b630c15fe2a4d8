// The package inside workerd (Cloudflare's runtime), driven by miniflare on loopback: the worker
// imports the `./workerd` entry point, whose wasm module is imported rather than read or fetched.
// Twice: without `nodejs_compat` (the wasm backend) and with it (workerd's own Ed25519).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as jose from "jose";
import { apiKey, jwks, startWorker, suiteBody, vectors } from "./workerd.mjs";

let mf;
let compat;

before(async () => {
  [mf, compat] = await Promise.all([startWorker([], "wasm"), startWorker(["nodejs_compat"], "node:crypto")]);
});

after(async () => {
  await Promise.all([mf?.dispose(), compat?.dispose()]);
});

for (const [label, worker] of [["without nodejs_compat (wasm)", () => mf], ["with nodejs_compat (node:crypto)", () => compat]]) {
  test(`the shared suite passes inside workerd ${label}`, async (t) => {
    const response = await worker().dispatchFetch("http://localhost/suite", { method: "POST", body: suiteBody });
    assert.equal(response.status, 200, await response.clone().text());
    const results = await response.json();
    assert.ok(results.length >= 20, `only ${results.length} cases ran`);
    for (const result of results) {
      await t.test(result.name, () => {
        assert.ok(result.ok, result.error);
      });
    }
  });
}

for (const [label, worker] of [["(wasm)", () => mf], ["(node:crypto)", () => compat]]) {
test(`a worker mints a token that jose verifies, and verifies it back ${label}`, async () => {
  const mf = worker();
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

test(`a worker rejects bad input and tampered tokens with the package's codes ${label}`, async () => {
  const mf = worker();
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
}
