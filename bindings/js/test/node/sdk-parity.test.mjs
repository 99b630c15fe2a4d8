// The package fails exactly as the Rust crate does: for a table of inputs (valid and invalid ids,
// patterns, policies, credentials, ttls, keys, JWKs and tokens), the package's outcome (value, or
// error code and message) equals the crate's, run natively by examples/sdk_outcomes.rs, on both
// backends (Node's own Ed25519 and the wasm one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { AccessToken, KeySet, PeerClaims, PeerPolicy, PublicKey, Verifier } from "@pulsebeam/server";

const root = fileURLToPath(new URL("../../", import.meta.url));
const vectors = JSON.parse(readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8"));
const [first, second] = vectors.vectors;

const ids = ["alice", "", "x".repeat(16), "x".repeat(17), "é".repeat(16), "é".repeat(17), "🙂ピア", "a\nb", "a\u0085", "\u007f", "room*", "*", "a b", "a:b", "a\\b", "\"quoted\"", "</script>"];
const patterns = [...ids, "ab*", "*ab", "a*b", "**", "*a*", "a".repeat(15) + "*", "a".repeat(16) + "*"];
const policies = ["*:*", "test:peer-*", "a:b:c", "nocolon", ":", "a:", ":b", "a:b\\", "a\\:b:c", "a\\\\:b", "**:*", "x".repeat(17) + ":*"];
const secrets = [...vectors.secret_error_cases.filter((c) => typeof c.api_secret === "string").map((c) => c.api_secret), "sk_", "_", "sk_" + "0".repeat(64)];
const keys = ["kid_x", "", "k".repeat(64), "k".repeat(65), "kid\u0000", "kid with space", "*"];
const ttls = [1, 3600, 0, 4294967295, 4294967296];
const hexes = [first.public_key_hex, first.public_key_hex.toUpperCase(), "", "zz", "abcd", "00".repeat(32), "01" + "00".repeat(31), "ff".repeat(32), ` ${first.public_key_hex} `];
const x = Buffer.from(first.public_key_hex, "hex").toString("base64url");
const jwks = [
  JSON.stringify({ kty: "OKP", crv: "Ed25519", x, kid: first.api_key }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x, kid: first.api_key, alg: "EdDSA", use: "sig" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x, kid: "a" }, { kty: "OKP", crv: "Ed25519", x, kid: "a" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x, kid: "a", d: x }] }),
  JSON.stringify({ keys: [{ kty: "EC", crv: "P-256", x, kid: "a" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x, kid: "a", alg: "RS256" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x, kid: "a", use: "enc" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x: x + "=", kid: "a" }] }),
  JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", x: "AAAA", kid: "a" }] }),
  JSON.stringify({ keys: "nope" }),
  "[]",
  "{",
  "",
];
const goodJwks = jwks[1];
const token = first.original_wallclock.token;
const [h, p, s] = token.split(".");
const b64 = (text) => Buffer.from(text).toString("base64url");
const tokens = [
  token,
  first.fixed_clock.token,
  second.original_wallclock.token,
  `${h}.${second.original_wallclock.token.split(".")[1]}.${s}`,
  `${b64('{"alg":"none","kid":"kid_73d8caa6c387d46c"}')}.${p}.${s}`,
  `${b64('{"alg":"EdDSA"}')}.${p}.${s}`,
  `${b64('{"alg":"EdDSA","kid":"kid_other"}')}.${p}.${s}`,
  `${b64('{"alg":"EdDSA","kid":7}')}.${p}.${s}`,
  `${b64('{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c","crit":["exp"]}')}.${p}.${s}`,
  `${b64("{")}.${p}.${s}`,
  `${h}.${p}`,
  `${token}.${s}`,
  "",
  "...",
  `${h}.${p}.${s}==`,
  token.slice(0, -4),
  `${token}${"A".repeat(5000)}`,
];

const cases = [
  ...ids.flatMap((g) => ["alice", "x".repeat(17)].map((pid) => ({ op: "peer_claims", args: [g, pid] }))),
  ...ids.map((pid) => ({ op: "peer_claims", args: ["room", pid] })),
  ...patterns.flatMap((g) => ["*", "**"].map((pp) => ({ op: "peer_policy", args: [g, pp] }))),
  ...patterns.map((pp) => ({ op: "peer_policy", args: ["*", pp] })),
  ...policies.map((text) => ({ op: "parse_policy", args: [text] })),
  ...secrets.map((secret) => ({ op: "access_token", args: ["kid_x", secret] })),
  ...keys.map((key) => ({ op: "access_token", args: [key, first.api_secret] })),
  ...ttls.map((ttl) => ({ op: "mint", args: [first.api_key, first.api_secret, "g", "p", "*", "*", ttl, 1735689600, null] })),
  { op: "mint", args: [first.api_key, first.api_secret, "g", "p", null, null, 60, 1735689600, null] },
  ...["t-1", "", "j".repeat(64), "j".repeat(65), "a\tb"].map((jti) => ({ op: "mint", args: [first.api_key, first.api_secret, "g", "p", "*", "*", 60, 1735689600, jti] })),
  ...hexes.map((hex) => ({ op: "public_key_hex", args: [hex] })),
  ...jwks.map((text) => ({ op: "public_key_jwk", args: [text] })),
  ...jwks.map((text) => ({ op: "key_set", args: [text] })),
  ...tokens.flatMap((t) => [1735689601, 1900000000].map((now) => ({ op: "verify", args: [goodJwks, t, now] }))),
];

function js({ op, args }, backend) {
  switch (op) {
    case "peer_claims": return new PeerClaims(args[0], args[1]).peerId;
    case "peer_policy": return new PeerPolicy(args[0], args[1]).toString();
    case "parse_policy": return PeerPolicy.parse(args[0]).toString();
    case "access_token": return new AccessToken(args[0], args[1]).apiKey;
    case "mint": {
      const app = new AccessToken(args[0], args[1], { backend });
      const claims = new PeerClaims(args[2], args[3]);
      if (args[4] !== null) claims.setAllowPolicy(new PeerPolicy(args[4], args[5]));
      return app.mint(claims, { ttlSeconds: args[6], nowUnix: args[7], tokenId: args[8] ?? undefined }).token;
    }
    case "public_key_hex": return PublicKey.fromHex(args[0]).toHex();
    case "public_key_jwk": return PublicKey.fromJwk(args[0]).toHex();
    case "key_set": return KeySet.fromJwks(args[0]).size;
    case "verify": return Verifier.fromJwks(args[0], { backend }).verifyAt(args[1], args[2]).peerId;
    default: throw new Error(`unknown op ${op}`);
  }
}

function outcome(c, backend) {
  try {
    return { ok: true, value: js(c, backend) };
  } catch (e) {
    if (e?.name !== "PulseBeamError") throw e;
    return { ok: false, code: e.code, message: e.message };
  }
}

test(`the package and the Rust crate agree on ${cases.length} inputs, value or code and message, on both backends`, () => {
  const stdout = execFileSync(
    "cargo",
    ["run", "--quiet", "--locked", "--manifest-path", `${root}Cargo.toml`, "--example", "sdk_outcomes"],
    { input: cases.map((c) => JSON.stringify(c)).join("\n") + "\n", encoding: "utf8", timeout: 600_000, stdio: ["pipe", "pipe", "inherit"] },
  );
  const rust = stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.equal(rust.length, cases.length);
  let failures = 0;
  for (const [i, c] of cases.entries()) {
    assert.notEqual(rust[i].code, "unknown_op", JSON.stringify(c));
    for (const backend of ["node:crypto", "wasm"]) {
      assert.deepEqual(outcome(c, backend), rust[i], `case ${i} on ${backend}: ${JSON.stringify(c)}`);
    }
    if (!rust[i].ok) failures++;
  }
  // The table exercises both sides of the rules.
  assert.ok(failures > cases.length / 3 && failures < cases.length, `${failures} of ${cases.length} cases fail`);
});
