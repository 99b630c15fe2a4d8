// The contenders of the benchmark, the same on every runtime: the package on each backend the
// runtime has, jose, and a hand-written JWS on the runtime's own node:crypto Ed25519. Each
// mints or verifies the same token for the same credentials and claims.

export const apiKey = "kid_73d8caa6c387d46c";
export const apiSecret = "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";

/** `{ mint: { name: fn }, verify: { name: fn } }`; `fn` may return a promise (jose). */
export async function contenders({ api, jose, crypto, Buffer }) {
  const seed = Buffer.from(apiSecret.slice(3), "hex");
  // PKCS#8 for an Ed25519 seed: a fixed 16-byte prefix, then the 32-byte seed.
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  const privateKey = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  const publicKey = crypto.createPublicKey(privateKey);
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: apiKey, alg: "EdDSA", use: "sig" };
  const payload = (exp) => ({ exp, gid: "myGroup1", pid: "myPeer1", ap: { group_id: "myGroup*", peer_id: "*" } });
  const headerB64 = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: apiKey })).toString("base64url");

  const nodeCryptoMint = (ttl) => {
    const exp = Math.floor(Date.now() / 1000) + ttl;
    const input = `${headerB64}.${Buffer.from(JSON.stringify(payload(exp))).toString("base64url")}`;
    return `${input}.${crypto.sign(null, Buffer.from(input), privateKey).toString("base64url")}`;
  };
  const nodeCryptoVerify = (token) => {
    const [h, p, s] = token.split(".");
    const header = JSON.parse(Buffer.from(h, "base64url").toString());
    if (header.alg !== "EdDSA" || header.kid !== apiKey) throw new Error("bad header");
    if (!crypto.verify(null, Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, "base64url"))) throw new Error("bad signature");
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    if (claims.exp <= Date.now() / 1000) throw new Error("expired");
    return claims;
  };

  const claims = new api.PeerClaims("myGroup1", "myPeer1");
  claims.setAllowPolicy(new api.PeerPolicy("myGroup*", "*"));
  const backends = api.backend === "wasm" ? ["wasm"] : [api.backend, "wasm"];
  const josePrivate = await jose.importJWK({ ...jwk, d: seed.toString("base64url") }, "EdDSA");
  const joseKeys = jose.createLocalJWKSet({ keys: [jwk] });
  const token = nodeCryptoMint(3600);
  const mint = {};
  const verify = {};
  for (const backend of backends) {
    const app = new api.AccessToken(apiKey, apiSecret, { backend });
    const keys = new api.KeySet();
    keys.add(apiKey, app.publicKey);
    const verifier = new api.Verifier(keys, { backend });
    // Everyone accepts everyone's tokens.
    nodeCryptoVerify(app.createToken(claims, 3600));
    verifier.verify(token);
    mint[`@pulsebeam/server (${backend})`] = () => app.createToken(claims, 3600);
    verify[`@pulsebeam/server (${backend})`] = () => verifier.verify(token);
  }
  nodeCryptoVerify(token);
  await jose.jwtVerify(token, joseKeys, { algorithms: ["EdDSA"] });
  mint["jose SignJWT"] = () => new jose.SignJWT(payload(Math.floor(Date.now() / 1000) + 3600)).setProtectedHeader({ alg: "EdDSA", kid: apiKey }).sign(josePrivate);
  mint["node:crypto sign (hand-rolled JWS)"] = () => nodeCryptoMint(3600);
  verify["jose jwtVerify"] = () => jose.jwtVerify(token, joseKeys, { algorithms: ["EdDSA"] });
  verify["node:crypto verify (hand-rolled JWS)"] = () => nodeCryptoVerify(token);
  return { mint, verify, base: `@pulsebeam/server (${backends[0]})` };
}

/** Runs `fn` `count` times, awaiting it when it returns a promise. */
export async function repeat(fn, count) {
  for (let i = 0; i < count; i++) {
    const r = fn();
    if (r instanceof Promise) await r;
  }
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Measures every contender: `rounds` rounds, contenders interleaved each round, each a batch
 * timed by `time(op, name)` (ns per operation). Prints a block of lines through `print`: the
 * median time, and the median over rounds of the time over the package's in the same round.
 */
export async function measure({ ops, base, rounds, batch, runtime, time, print }) {
  print(`# ${runtime}: ${rounds} rounds of ${batch} operations, contenders interleaved each round (rotating)`);
  for (const [op, fns] of Object.entries(ops)) {
    const samples = Object.fromEntries(Object.keys(fns).map((name) => [name, []]));
    const names = Object.keys(fns);
    for (const name of names) await time(op, name); // warm-up
    for (let round = 0; round < rounds; round++) {
      // Each round starts with another contender, so none always follows the same one.
      for (let i = 0; i < names.length; i++) {
        const name = names[(round + i) % names.length];
        samples[name].push(await time(op, name));
      }
    }
    // The ratio to the package is taken within each round (the batches of one round run back to
    // back, under the same load from the rest of the machine), then its median over the rounds.
    for (const [name, xs] of Object.entries(samples)) {
      const ratio = median(xs.map((x, round) => x / samples[base][round]));
      print(`${op.padEnd(6)} ${name.padEnd(38)} median ${(median(xs) / 1000).toFixed(1).padStart(7)} µs/op   ${ratio.toFixed(2)}x the package's time`);
    }
  }
}
