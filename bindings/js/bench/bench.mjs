// createToken and verify from the wasm package, next to jose and to a hand-written JWS on the
// runtime's own node:crypto Ed25519, measured side by side in one process. Runs on Node, Bun
// and Deno; prints the median time per operation and each contender's ratio to the package.
//
//   node bench/bench.mjs | bun bench/bench.mjs | deno run -A bench/bench.mjs   [--quick]
import * as crypto from "node:crypto";
import * as jose from "jose";

const api = typeof Deno !== "undefined" ? await import("../dist/deno.js") : await import("@pulsebeam/server");
const { AccessToken, PeerClaims, PeerPolicy, Verifier, KeySet } = api;

const runtime = typeof Deno !== "undefined" ? `deno ${Deno.version.deno}`
  : typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process.versions.node}`;
const quick = (typeof Deno !== "undefined" ? Deno.args : process.argv).includes("--quick");
const ROUNDS = quick ? 5 : 15;
const BATCH = quick ? 200 : 1000;

// --- the same credentials and claims for everyone -------------------------------------------
const apiKey = "kid_73d8caa6c387d46c";
const apiSecret = "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";
const seed = Buffer.from(apiSecret.slice(3), "hex");
// PKCS#8 for an Ed25519 seed: a fixed 16-byte prefix, then the 32-byte seed.
const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
const privateKey = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
const publicKey = crypto.createPublicKey(privateKey);
const jwk = { ...publicKey.export({ format: "jwk" }), kid: apiKey, alg: "EdDSA", use: "sig" };

const app = new AccessToken(apiKey, apiSecret);
const claims = new PeerClaims("myGroup1", "myPeer1");
claims.setAllowPolicy(new PeerPolicy("myGroup*", "*"));
const keys = new KeySet();
keys.add(apiKey, app.publicKey);
const verifier = new Verifier(keys);
const josePrivate = await jose.importJWK({ ...jwk, d: seed.toString("base64url") }, "EdDSA");
const joseKeys = jose.createLocalJWKSet({ keys: [jwk] });
const payload = (exp) => ({ exp, gid: "myGroup1", pid: "myPeer1", ap: { group_id: "myGroup*", peer_id: "*" } });
const headerB64 = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: apiKey })).toString("base64url");

function nodeCryptoMint(ttl) {
  const exp = Math.floor(Date.now() / 1000) + ttl;
  const input = `${headerB64}.${Buffer.from(JSON.stringify(payload(exp))).toString("base64url")}`;
  return `${input}.${crypto.sign(null, Buffer.from(input), privateKey).toString("base64url")}`;
}

function nodeCryptoVerify(token) {
  const [h, p, s] = token.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url").toString());
  if (header.alg !== "EdDSA" || header.kid !== apiKey) throw new Error("bad header");
  if (!crypto.verify(null, Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, "base64url"))) throw new Error("bad signature");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  if (claims.exp <= Date.now() / 1000) throw new Error("expired");
  return claims;
}

const token = app.createToken(claims, 3600);
// Everyone checks the same token, and accepts it.
verifier.verify(token);
nodeCryptoVerify(token);
await jose.jwtVerify(token, joseKeys, { algorithms: ["EdDSA"] });

const contenders = {
  mint: {
    "@pulsebeam/server (wasm)": () => app.createToken(claims, 3600),
    "jose SignJWT": () => new jose.SignJWT(payload(Math.floor(Date.now() / 1000) + 3600)).setProtectedHeader({ alg: "EdDSA", kid: apiKey }).sign(josePrivate),
    "node:crypto sign (hand-rolled JWS)": () => nodeCryptoMint(3600),
  },
  verify: {
    "@pulsebeam/server (wasm)": () => verifier.verify(token),
    "jose jwtVerify": () => jose.jwtVerify(token, joseKeys, { algorithms: ["EdDSA"] }),
    "node:crypto verify (hand-rolled JWS)": () => nodeCryptoVerify(token),
  },
};

async function batch(fn) {
  const start = performance.now();
  for (let i = 0; i < BATCH; i++) {
    const r = fn();
    if (r instanceof Promise) await r;
  }
  return ((performance.now() - start) * 1e6) / BATCH; // ns per op
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

console.log(`# ${runtime}: ${ROUNDS} rounds of ${BATCH} operations, contenders interleaved each round`);
for (const [op, fns] of Object.entries(contenders)) {
  const samples = Object.fromEntries(Object.keys(fns).map((name) => [name, []]));
  for (const fn of Object.values(fns)) await batch(fn); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, fn] of Object.entries(fns)) samples[name].push(await batch(fn));
  }
  const base = median(samples["@pulsebeam/server (wasm)"]);
  for (const [name, xs] of Object.entries(samples)) {
    const m = median(xs);
    console.log(`${op.padEnd(6)} ${name.padEnd(38)} median ${(m / 1000).toFixed(1).padStart(7)} µs/op   ${(m / base).toFixed(2)}x the package's time`);
  }
}
