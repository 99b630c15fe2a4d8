// The runtime's own Ed25519 verify is a plain RFC 8032 verify; the package's checks around it
// make it accept exactly what the Rust crate's strict verify accepts. The corpus of hostile
// tokens (test/hostile-tokens.json, made by examples/hostile_tokens.rs with the crate's outcome
// for each) is checked on both backends by the shared suite on every runtime; here, that the
// corpus is current and that it holds a case where the checks matter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Verifier } from "@pulsebeam/server";

const root = fileURLToPath(new URL("../../", import.meta.url));
const corpusText = readFileSync(new URL("../hostile-tokens.json", import.meta.url), "utf8");
const corpus = JSON.parse(corpusText);

test("test/hostile-tokens.json is what examples/hostile_tokens.rs makes (regenerate it with that example)", () => {
  const fresh = execFileSync("cargo", ["run", "--quiet", "--locked", "--manifest-path", `${root}Cargo.toml`, "--example", "hostile_tokens"], {
    encoding: "utf8",
    timeout: 600_000,
    stdio: ["ignore", "pipe", "inherit"],
  });
  assert.equal(corpusText.trim(), fresh.trim());
});

test("a plain Ed25519 verify accepts forgeries the strict checks refuse, on both backends", () => {
  const jwk = corpus.jwks.keys.find((k) => k.kid === "kid_73d8caa6c387d46c");
  const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
  const plain = (token) => {
    const at = token.lastIndexOf(".");
    return crypto.verify(null, Buffer.from(token.slice(0, at)), key, Buffer.from(token.slice(at + 1), "base64url"));
  };
  const byName = Object.fromEntries(corpus.cases.map((c) => [c.name, c]));
  const forged = byName["R the identity, S = k·a (a plain verify accepts it)"];
  assert.ok(plain(forged.token), "node:crypto alone accepts a small-order R");
  assert.equal(forged.outcome.code, "invalid_signature", "the crate refuses it");
  assert.ok(plain(byName["a valid signature"].token));
  for (const backend of ["node:crypto", "wasm"]) {
    const verifier = Verifier.fromJwks(corpus.jwks, { backend });
    assert.equal(verifier.backend, backend);
    assert.throws(() => verifier.verifyAt(forged.token, corpus.now_unix), { code: "invalid_signature" }, backend);
    assert.equal(verifier.verifyAt(byName["a valid signature"].token, corpus.now_unix).peerId, "p", backend);
  }
  // Which non-canonical `S` a plain verify takes depends on the runtime's library; the
  // package refuses every one before asking it.
  const accepted = corpus.cases.filter((c) => c.outcome.code === "invalid_signature" && plain(c.token)).map((c) => c.name);
  console.log(`# node:crypto alone would accept: ${accepted.join("; ")}`);
});
