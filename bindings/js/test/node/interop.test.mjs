// Tokens minted by the package are ordinary EdDSA JWS: jose (the reference JOSE library) and the
// Rust crate itself (natively, examples/verify_token.rs) verify them, and the package verifies
// what jose signs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as jose from "jose";
import { AccessToken, KeyPair, KeySet, PeerClaims, PeerPolicy, PublicKey, Verifier } from "@pulsebeam/server";

const vectors = JSON.parse(readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8"));
const root = fileURLToPath(new URL("../../", import.meta.url));

function claims(groupId, peerId, policy = ["*", "*"]) {
  const c = new PeerClaims(groupId, peerId);
  c.setAllowPolicy(new PeerPolicy(...policy));
  return c;
}

test("jose verifies tokens minted by the package, with the exported JWK and JWKS", async () => {
  const pair = KeyPair.generate();
  const app = new AccessToken(pair.apiKey, pair.apiSecret);
  const token = app.createToken(claims("群组", "ピア🙂", ["room-*", "*"]), 600);
  const keys = new KeySet();
  keys.add(pair.apiKey, pair.publicKey);

  const viaSet = await jose.jwtVerify(token, jose.createLocalJWKSet(keys.toJwks()), { algorithms: ["EdDSA"] });
  assert.deepEqual(viaSet.protectedHeader, { alg: "EdDSA", kid: pair.apiKey });
  assert.equal(viaSet.payload.gid, "群组");
  assert.equal(viaSet.payload.pid, "ピア🙂");
  assert.deepEqual(viaSet.payload.ap, { group_id: "room-*", peer_id: "*" });
  assert.deepEqual(Object.keys(viaSet.payload), ["exp", "gid", "pid", "ap"]);

  const key = await jose.importJWK(pair.toJwk(), "EdDSA");
  const viaKey = await jose.jwtVerify(token, key);
  assert.equal(viaKey.payload.exp, viaSet.payload.exp);

  const other = await jose.importJWK(KeyPair.generate().toJwk(), "EdDSA");
  await assert.rejects(jose.jwtVerify(token, other), { code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
});

test("jose verifies the golden tokens with the public keys the package derives", async () => {
  for (const v of vectors.vectors) {
    const jwk = new AccessToken(v.api_key, v.api_secret).publicKey.toJwk(v.api_key);
    const key = await jose.importJWK(jwk, "EdDSA");
    const { payload } = await jose.compactVerify(v.fixed_clock.token, key);
    assert.equal(new TextDecoder().decode(payload), v.fixed_clock.payload_json, `vector ${v.id}`);
  }
});

test("the package verifies tokens that jose signs with the same claims", async () => {
  const { publicKey, privateKey } = await jose.generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid: "kid_jose" };
  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = await new jose.SignJWT({ gid: "room1", pid: "bob", ap: { group_id: "room1", peer_id: "*" } })
    .setProtectedHeader({ alg: "EdDSA", kid: "kid_jose" })
    .setExpirationTime(exp)
    .setIssuedAt()
    .sign(privateKey);
  const verified = Verifier.fromJwks({ keys: [jwk] }).verify(token);
  assert.equal(verified.keyId, "kid_jose");
  assert.equal(verified.expiresAt, exp);
  assert.ok(verified.allows("room1", "carol"));
  assert.ok(!verified.allows("room2", "carol"));

  const forged = await new jose.SignJWT({ gid: "room1", pid: "bob", ap: null })
    .setProtectedHeader({ alg: "EdDSA", kid: "kid_jose" })
    .setExpirationTime(exp)
    .sign((await jose.generateKeyPair("EdDSA", { crv: "Ed25519" })).privateKey);
  assert.throws(() => Verifier.fromJwks({ keys: [jwk] }).verify(forged), { code: "invalid_signature" });
  assert.equal(PublicKey.fromJwk(jwk).toJwk("kid_jose").x, jwk.x);
});

test("the Rust crate verifies tokens minted by the package, and rejects a tampered one", () => {
  const v = vectors.vectors[0];
  const app = new AccessToken(v.api_key, v.api_secret);
  const keys = new KeySet();
  keys.add(v.api_key, app.publicKey);
  const now = 1_800_000_000;
  const tokens = [
    app.mint(claims("room1", "alice", ["room1", "*"]), { ttlSeconds: 3600, nowUnix: now }).token,
    app.mint(claims("群组", "ピア🙂", ["*", "*bob"]), { ttlSeconds: 60, nowUnix: now, issuedAt: true, tokenId: "t-1" }).token,
    app.mint(new PeerClaims("g", "p"), { ttlSeconds: 60, nowUnix: now, allowNoPolicy: true }).token,
  ];
  const tampered = tokens[0].replace(/\.[^.]/, (m) => (m === ".e" ? ".f" : ".e"));
  const expired = app.mint(claims("room1", "alice"), { ttlSeconds: 1, nowUnix: now - 3600 }).token;

  const dir = mkdtempSync(join(tmpdir(), "pulsebeam-js-"));
  try {
    const jwksPath = join(dir, "jwks.json");
    writeFileSync(jwksPath, JSON.stringify(keys.toJwks()));
    const stdout = execFileSync(
      "cargo",
      ["run", "--quiet", "--locked", "--manifest-path", join(root, "Cargo.toml"), "--example", "verify_token", "--", jwksPath, String(now)],
      { input: [...tokens, tampered, expired].join("\n") + "\n", encoding: "utf8", timeout: 600_000, stdio: ["pipe", "pipe", "inherit"] },
    );
    const results = stdout.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(results.length, 5);
    assert.deepEqual(results[0], { ok: true, kid: v.api_key, gid: "room1", pid: "alice", ap: "room1:*", exp: now + 3600 });
    assert.deepEqual(results[1], { ok: true, kid: v.api_key, gid: "群组", pid: "ピア🙂", ap: "*:*bob", exp: now + 60 });
    assert.deepEqual(results[2], { ok: true, kid: v.api_key, gid: "g", pid: "p", ap: null, exp: now + 60 });
    assert.deepEqual(results[3], { ok: false, code: "invalid_signature", message: "invalid signature" });
    assert.equal(results[4].code, "token_expired");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
