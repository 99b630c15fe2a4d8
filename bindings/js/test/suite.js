// The behaviour every runtime must show, written once: Node (node:test), Deno (Deno.test),
// Bun (bun:test) and workerd (inside a worker) each register these cases with their own runner.
//
// `cases(api, vectors)` takes the package's exports (from the runtime's entry point) and the
// golden data of testdata/original-tokens.json, and returns `[{ name, fn }]`.

/** A failed expectation. */
class AssertionError extends Error {
  constructor(message) {
    super(message);
    this.name = "AssertionError";
  }
}

function show(value) {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value) ?? value);
  } catch {
    return String(value);
  }
}

function eq(actual, expected, what) {
  if (actual !== expected) {
    throw new AssertionError(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

function ok(value, what) {
  if (!value) throw new AssertionError(what);
}

function deepEq(actual, expected, what) {
  eq(JSON.stringify(actual), JSON.stringify(expected), what);
}

/**
 * Runs `fn`, expects it to throw a PulseBeamError with `code`; returns the error.
 * `message` (optional) is matched exactly, or as a RegExp.
 */
function throwsCode(fn, code, what, { message, type } = {}) {
  let error;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  if (error === undefined) throw new AssertionError(`${what}: expected an error with code ${code}, nothing was thrown`);
  ok(error instanceof Error, `${what}: thrown value is not an Error: ${show(error)}`);
  eq(error.name, "PulseBeamError", `${what}: error name`);
  eq(error.code, code, `${what}: error code (message: ${error.message})`);
  ok(typeof error.message === "string" && error.message.length > 0, `${what}: empty message`);
  if (message instanceof RegExp) {
    ok(message.test(error.message), `${what}: message ${show(error.message)} does not match ${message}`);
  } else if (message !== undefined) {
    eq(error.message, message, `${what}: message`);
  }
  if (type !== undefined) ok(error instanceof type, `${what}: expected a ${type.name}, got ${error.constructor.name}`);
  return error;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function b64urlEncode(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlDecode(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function segments(token) {
  const [header, payload, signature] = token.split(".");
  return {
    header: utf8Decoder.decode(b64urlDecode(header)),
    payload: utf8Decoder.decode(b64urlDecode(payload)),
    signature: b64urlDecode(signature),
  };
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs `fn` with `Date.now()` returning `unixSeconds` (the binding's wall clock). */
function atTime(unixSeconds, fn) {
  const realNow = Date.now;
  Date.now = () => unixSeconds * 1000 + 999;
  try {
    return fn();
  } finally {
    Date.now = realNow;
  }
}

/** Re-encodes a token with JSON-edited header or payload (the signature stays, now wrong). */
function reencode(token, { header, payload }) {
  const [h, p, s] = token.split(".");
  const newHeader = header ? b64urlEncode(utf8.encode(header(utf8Decoder.decode(b64urlDecode(h))))) : h;
  const newPayload = payload ? b64urlEncode(utf8.encode(payload(utf8Decoder.decode(b64urlDecode(p))))) : p;
  return `${newHeader}.${newPayload}.${s}`;
}

/**
 * `api` with every AccessToken and Verifier on `backend` (`"node:crypto"` or `"wasm"`), through
 * the public `backend` option.
 */
export function onBackend(api, backend) {
  class AccessToken extends api.AccessToken {
    constructor(apiKey, apiSecret, options) {
      super(apiKey, apiSecret, { backend, ...options });
    }
  }
  class Verifier extends api.Verifier {
    constructor(keys, options) {
      super(keys, { backend, ...options });
    }

    static fromJwks(jwks, options) {
      return api.Verifier.fromJwks(jwks, { backend, ...options });
    }
  }
  return { ...api, AccessToken, Verifier, backend };
}

/**
 * Every case, on every backend the runtime has: the wasm one everywhere, the runtime's own
 * Ed25519 where there is one. `expectedBackend` is the default this runtime must pick.
 */
export function allCases(api, vectors, expectedBackend) {
  const list = [
    {
      name: `the default backend here is ${expectedBackend}`,
      fn: () => {
        eq(api.backend, expectedBackend, "exported backend");
        const { api_key: apiKey, api_secret: apiSecret } = vectors.vectors[0];
        // Objects without a `backend` option move to the runtime's own Ed25519 once it is
        // loaded (after 64 calls in the process).
        const app = new api.AccessToken(apiKey, apiSecret);
        const keys = new api.KeySet();
        keys.add(apiKey, app.publicKey);
        const verifier = new api.Verifier(keys);
        const claims = new api.PeerClaims("g", "p");
        claims.setAllowPolicy(api.PeerPolicy.allowAll());
        const tokens = new Set();
        for (let i = 0; i < 100; i++) {
          const token = app.mint(claims, { ttlSeconds: 60, nowUnix: 1_800_000_000 }).token;
          tokens.add(token);
          eq(verifier.verifyAt(token, 1_800_000_001).peerId, "p", "verified on whichever backend");
        }
        eq(tokens.size, 1, "the same token on both backends");
        eq(app.backend, expectedBackend, "an AccessToken's backend after 100 calls");
        eq(verifier.backend, expectedBackend, "a Verifier's backend after 100 calls");
        eq(new api.AccessToken(apiKey, apiSecret, { backend: "wasm" }).backend, "wasm", "wasm on request");
        if (expectedBackend === "wasm") {
          throwsCode(() => new api.Verifier(new api.KeySet(), { backend: "node:crypto" }), "invalid_argument", "no native Ed25519 here", {
            type: TypeError,
            message: 'options.backend "node:crypto" is not available here: this runtime has no synchronous Ed25519 in node:crypto; use "wasm" or leave the option out',
          });
        }
      },
    },
  ];
  const backends = api.backend === "wasm" ? ["wasm"] : ["wasm", api.backend];
  for (const backend of backends) {
    for (const { name, fn } of cases(onBackend(api, backend), vectors)) list.push({ name: `[${backend}] ${name}`, fn });
  }
  return list;
}

export function cases(api, vectors) {
  const { AccessToken, KeyPair, KeySet, PeerClaims, PeerPolicy, PublicKey, Verifier, isPulseBeamError, backend } = api;
  const list = [];
  const test = (name, fn) => list.push({ name, fn });
  const all = vectors.vectors;
  const first = all[0];

  const claimsOf = (inputs) => {
    const claims = new PeerClaims(inputs.group_id, inputs.peer_id);
    if (inputs.allow_policy) {
      claims.setAllowPolicy(new PeerPolicy(inputs.allow_policy.group_id, inputs.allow_policy.peer_id));
    }
    return claims;
  };
  const verifierFor = (options) => {
    const keys = new KeySet();
    const seen = new Set();
    for (const v of all) {
      if (seen.has(v.api_key)) continue;
      seen.add(v.api_key);
      keys.add(v.api_key, PublicKey.fromHex(v.public_key_hex));
    }
    return new Verifier(keys, options);
  };
  const app = new AccessToken(first.api_key, first.api_secret);
  const allowAll = () => {
    const claims = new PeerClaims("room", "alice");
    claims.setAllowPolicy(PeerPolicy.allowAll());
    return claims;
  };

  // --- golden tokens -----------------------------------------------------------------------

  test("mints every golden fixed_clock token byte for byte with a pinned clock (mint nowUnix)", () => {
    for (const v of all) {
      const minted = new AccessToken(v.api_key, v.api_secret).mint(claimsOf(v.inputs), {
        ttlSeconds: v.fixed_clock.duration_secs,
        nowUnix: v.fixed_clock.now_unix,
        allowNoPolicy: v.inputs.allow_policy === null,
      });
      eq(minted.token, v.fixed_clock.token, `vector ${v.id} token`);
      eq(minted.issuedAt, v.fixed_clock.now_unix, `vector ${v.id} issuedAt`);
      eq(minted.expiresAt, v.fixed_clock.exp, `vector ${v.id} expiresAt`);
      const parts = segments(minted.token);
      eq(parts.header, v.fixed_clock.header_json, `vector ${v.id} header bytes`);
      eq(parts.payload, v.fixed_clock.payload_json, `vector ${v.id} payload bytes`);
      eq(hex(parts.signature), v.fixed_clock.signature_hex, `vector ${v.id} signature`);
    }
  });

  test("createToken(claims, ttl), the original API, mints the golden tokens at the golden second", () => {
    let checked = 0;
    for (const v of all.filter((v) => v.inputs.allow_policy !== null)) {
      const app = new AccessToken(v.api_key, v.api_secret);
      const claims = claimsOf(v.inputs);
      const token = atTime(v.fixed_clock.now_unix, () => app.createToken(claims, v.fixed_clock.duration_secs));
      eq(token, v.fixed_clock.token, `vector ${v.id}`);
      checked++;
    }
    ok(checked >= 5, `only ${checked} vectors have a policy`);
  });

  test("createToken reproduces the original's wall-clock tokens at their implied second", () => {
    for (const v of all.filter((v) => v.inputs.allow_policy !== null)) {
      const w = v.original_wallclock;
      const token = atTime(w.issued_at_unix_implied, () =>
        new AccessToken(v.api_key, v.api_secret).createToken(claimsOf(v.inputs), w.duration_secs));
      eq(token, w.token, `vector ${v.id}`);
    }
  });

  test("the original example runs as is (setAllowPolicy twice with one policy, ttl 3600)", () => {
    const app = new AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67");
    const claims = new PeerClaims("myGroup1", "myPeer1");
    const rule = new PeerPolicy("*", "*");
    claims.setAllowPolicy(rule);
    claims.setAllowPolicy(rule);
    const before = Math.floor(Date.now() / 1000);
    const token = app.createToken(claims, 3600);
    const after = Math.floor(Date.now() / 1000);
    eq(typeof token, "string", "token type");
    eq(token.split(".").length, 3, "segments");
    eq(token.length, 263, "the sample token's length (tokens.md)");
    const exp = JSON.parse(segments(token).payload).exp;
    ok(exp >= before + 3600 && exp <= after + 3600, `exp ${exp} is now + 3600`);
    eq(rule.groupPattern, "*", "the policy stays usable after setAllowPolicy");
  });

  // --- verification ------------------------------------------------------------------------

  test("verifies the original's wall-clock tokens (valid until 2163) at the real time", () => {
    const verifier = verifierFor();
    for (const v of all) {
      const claims = verifier.verify(v.original_wallclock.token);
      eq(claims.keyId, v.api_key, `vector ${v.id} kid`);
      eq(claims.groupId, v.inputs.group_id, `vector ${v.id} gid`);
      eq(claims.peerId, v.inputs.peer_id, `vector ${v.id} pid`);
      eq(claims.expiresAt, v.original_wallclock.exp, `vector ${v.id} exp`);
      eq(claims.issuedAt, undefined, `vector ${v.id} iat`);
      if (v.inputs.allow_policy) {
        eq(claims.allowPolicy.groupPattern, v.inputs.allow_policy.group_id, `vector ${v.id} ap.group_id`);
        eq(claims.allowPolicy.peerPattern, v.inputs.allow_policy.peer_id, `vector ${v.id} ap.peer_id`);
        ok(claims.allows(v.inputs.group_id, v.inputs.peer_id), `vector ${v.id} admits itself`);
      } else {
        eq(claims.allowPolicy, undefined, `vector ${v.id} ap`);
        ok(!claims.allows(v.inputs.group_id, v.inputs.peer_id), `vector ${v.id} without policy admits no one`);
      }
    }
  });

  test("verifies the golden fixed_clock tokens at their time and rejects them as expired now", () => {
    const verifier = verifierFor();
    for (const v of all) {
      const claims = verifier.verifyAt(v.fixed_clock.token, v.fixed_clock.now_unix + 1);
      eq(claims.expiresAt, v.fixed_clock.exp, `vector ${v.id} exp`);
      const now = Math.floor(Date.now() / 1000);
      throwsCode(() => verifier.verify(v.fixed_clock.token), "token_expired", `vector ${v.id} now`, {
        message: new RegExp(`expired at ${v.fixed_clock.exp}`),
      });
      ok(now > v.fixed_clock.exp, "the wall clock is past 2025");
    }
  });

  test("a verifier from a JWKS (object or text) verifies like one from hex keys", () => {
    const jwks = verifierFor().toJwks();
    eq(jwks.keys.length, 3, "three distinct kids in the vectors");
    for (const source of [jwks, JSON.stringify(jwks)]) {
      const verifier = Verifier.fromJwks(source);
      for (const v of all) eq(verifier.verify(v.original_wallclock.token).keyId, v.api_key, `vector ${v.id}`);
    }
    const single = Verifier.fromJwks(jwks.keys[0]);
    eq(single.toJwks().keys.length, 1, "a single JWK is a set of one");
  });

  test("leeway: exp and nbf are honoured with the configured skew", () => {
    const v = first;
    const exp = v.fixed_clock.exp;
    const strict = verifierFor({ leewaySeconds: 0 });
    eq(strict.leewaySeconds, 0, "leeway option");
    throwsCode(() => strict.verifyAt(v.fixed_clock.token, exp), "token_expired", "exp == now, no leeway");
    strict.verifyAt(v.fixed_clock.token, exp - 1);
    const lenient = verifierFor();
    eq(lenient.leewaySeconds, 30, "default leeway");
    lenient.verifyAt(v.fixed_clock.token, exp + 29);
    throwsCode(() => lenient.verifyAt(v.fixed_clock.token, exp + 30), "token_expired", "beyond the leeway");

    const future = app.mint(allowAll(), { ttlSeconds: 600, nowUnix: 1_000_000, notBefore: 1_000_100 });
    throwsCode(() => strict.verifyAt(future.token, 1_000_099), "token_not_yet_valid", "before nbf", {
      message: /1000100/,
    });
    eq(strict.verifyAt(future.token, 1_000_100).notBefore, 1_000_100, "at nbf");
  });

  test("tampered and malformed tokens are rejected with the right code", () => {
    const verifier = verifierFor();
    const token = first.original_wallclock.token;
    const [h, p, s] = token.split(".");
    const other = all[1].original_wallclock.token.split(".");
    const flip = (text, at) => text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1);
    const rejects = [
      ["a payload character changed", `${h}.${flip(p, 10)}.${s}`, "invalid_signature"],
      ["a signature character changed", `${h}.${p}.${flip(s, 5)}`, "invalid_signature"],
      ["another token's signature", `${h}.${p}.${other[2]}`, "invalid_signature"],
      ["another token's payload", `${h}.${other[1]}.${s}`, "invalid_signature"],
      ["gid rewritten", reencode(token, { payload: (j) => j.replace('"gid":"default"', '"gid":"admin"') }), "invalid_signature"],
      ["exp extended", reencode(token, { payload: (j) => j.replace("6090792305", "6090792399") }), "invalid_signature"],
      ["alg none", reencode(token, { header: (j) => j.replace("EdDSA", "none") }), "unsupported_algorithm"],
      ["alg HS256", reencode(token, { header: (j) => j.replace("EdDSA", "HS256") }), "unsupported_algorithm"],
      ["alg missing", reencode(token, { header: () => '{"kid":"kid_73d8caa6c387d46c"}' }), "unsupported_algorithm"],
      ["kid missing", reencode(token, { header: () => '{"alg":"EdDSA"}' }), "missing_key_id"],
      ["kid unknown", reencode(token, { header: (j) => j.replace("kid_73d8caa6c387d46c", "kid_ffffffffffffffff") }), "unknown_key_id"],
      ["header not JSON", `${b64urlEncode(utf8.encode("{not json"))}.${p}.${s}`, "malformed_token"],
      ["two segments", `${h}.${p}`, "malformed_token"],
      ["four segments", `${token}.${s}`, "malformed_token"],
      ["empty string", "", "malformed_token"],
      ["padding in the signature", `${h}.${p}.${s}==`, "malformed_token"],
      ["truncated signature", token.slice(0, -10), "malformed_token"],
      ["a non-base64url character", `${h}.${p}.${s.slice(0, -1)}!`, "malformed_token"],
      ["whitespace around", ` ${token} `, "malformed_token"],
      ["oversized", `${token}.${"A".repeat(5000)}`, "token_too_large"],
    ];
    for (const [what, bad, code] of rejects) throwsCode(() => verifier.verify(bad), code, what);
    throwsCode(() => verifier.verify(`${h}.${p}.${flip(s, 5)}`), "invalid_signature", "exact message", { message: "invalid signature" });
    throwsCode(() => verifier.verify(`${token}.${"A".repeat(5000)}`), "token_too_large", "exact message", {
      message: /4096/,
    });
    // A token signed by a key the verifier does not trust, under a trusted kid.
    const impostor = new AccessToken(first.api_key, KeyPair.generate().apiSecret);
    throwsCode(() => verifier.verify(impostor.createToken(allowAll(), 60)), "invalid_signature", "impostor key");
    const small = verifierFor({ maxTokenLength: 100 });
    throwsCode(() => small.verify(token), "token_too_large", "maxTokenLength option");
  });

  // --- validation: every rule of the Rust crate --------------------------------------------

  test("API secrets follow the original's parsing rules and errors (golden secret_error_cases)", () => {
    const original = {
      "error: invalid api_secret": "invalid api_secret",
      "error: invalid secret format, expecting hex": "invalid secret format, expecting hex",
      "error: invalid secret length": "invalid secret length",
    };
    let errors = 0;
    for (const c of vectors.secret_error_cases) {
      // Cases without a secret are about other inputs (a ttl of 0, which this SDK refuses).
      if (typeof c.api_secret !== "string") continue;
      if (c.result === "ok") {
        eq(new AccessToken("kid_x", c.api_secret).apiKey, "kid_x", c.case);
      } else {
        const prefix = original[c.result];
        ok(prefix, `unknown expected result ${c.result}`);
        const error = throwsCode(() => new AccessToken("kid_x", c.api_secret), "invalid_api_secret", c.case);
        ok(error.message.startsWith(prefix), `${c.case}: message ${show(error.message)} starts with ${show(prefix)}`);
        ok(!error.message.includes(c.api_secret.slice(3, 20)) || c.api_secret.length < 20, `${c.case}: no secret in the message`);
        errors++;
      }
    }
    ok(errors >= 6, "error cases were checked");
    throwsCode(() => new AccessToken("kid_x", "sk_7edea599046490dfd271b863b03398d2"), "invalid_api_secret", "length", {
      message: /^invalid secret length/,
    });
    throwsCode(() => new AccessToken("kid_x", "no-separator"), "invalid_api_secret", "separator", {
      message: /^invalid api_secret/,
    });
  });

  test("ids, patterns and API keys follow the crate's value rules", () => {
    const secret = first.api_secret;
    const cases = [
      [() => new PeerClaims("", "alice"), "invalid_group_id", "group id is empty; give 1 to 16 characters"],
      [() => new PeerClaims("g", ""), "invalid_peer_id", "peer id is empty; give 1 to 16 characters"],
      [() => new PeerClaims("x".repeat(17), "p"), "invalid_group_id", "group id is 17 characters long; shorten it to at most 16"],
      [() => new PeerClaims("g", "é".repeat(17)), "invalid_peer_id", "peer id is 17 characters long; shorten it to at most 16"],
      [() => new PeerClaims("g", "a\nb"), "invalid_peer_id", "peer id contains a control character at position 1; remove it"],
      [() => new PeerClaims("g", "a\u0085"), "invalid_peer_id", "peer id contains a control character at position 1; remove it"],
      [() => new PeerClaims("room*", "p"), "invalid_group_id", "group id contains `*`; ids are literal, only policy patterns take a wildcard"],
      [() => new PeerPolicy("", "*"), "invalid_group_pattern", "group pattern is empty; give 1 to 16 characters"],
      [() => new PeerPolicy("*", "*a*"), "invalid_peer_pattern", "peer pattern has 2 `*` wildcards; a pattern takes at most one (e.g. `room-*`)"],
      [() => new PeerPolicy("a".repeat(16) + "*", "*"), "invalid_group_pattern", "group pattern is 17 characters long; shorten it to at most 16"],
      [() => new PeerPolicy("\t", "*"), "invalid_group_pattern", "group pattern contains a control character at position 0; remove it"],
      [() => new AccessToken("", secret), "invalid_api_key", "api key is empty; give 1 to 64 characters"],
      [() => new AccessToken("k".repeat(65), secret), "invalid_api_key", "api key is 65 characters long; shorten it to at most 64"],
      [() => new AccessToken("kid\u0000", secret), "invalid_api_key", "api key contains a control character at position 3; remove it"],
    ];
    // The exact messages are checked against the Rust crate itself (test/node/sdk-parity.test.mjs);
    // here, that each names what it is about.
    for (const [fn, code, message] of cases) {
      throwsCode(fn, code, message, { message: new RegExp(`^${message.split(" ").slice(0, 2).join(" ")} `) });
    }
    // The limits are inclusive and count characters, not bytes or UTF-16 units.
    eq(new PeerClaims("x".repeat(16), "🙂".repeat(16)).peerId, "🙂".repeat(16), "16 characters");
    eq(new PeerPolicy("é".repeat(15) + "*", "*").groupPattern.length, 16, "16-character pattern");
    eq(new AccessToken("k".repeat(64), secret).apiKey.length, 64, "64-character key");
  });

  test("ttl rules: zero, too long, and non-whole numbers are refused", () => {
    const claims = allowAll();
    throwsCode(() => app.createToken(claims, 0), "zero_ttl", "0", {
      message: /ttl/,
    });
    throwsCode(() => app.createToken(claims, 4294967296), "ttl_too_long", "2^32", {
      message: /4294967295/,
    });
    eq(app.mint(claims, { ttlSeconds: 4294967295, nowUnix: 0 }).expiresAt, 4294967295, "u32::MAX is the largest ttl");
    for (const bad of [-1, 1.5, NaN, Infinity, -Infinity, 2 ** 60]) {
      throwsCode(() => app.createToken(claims, bad), bad === 2 ** 60 ? "invalid_ttl" : "invalid_ttl", `ttl ${bad}`, {
        type: RangeError,
        message: /^ttlSeconds must be a whole, non-negative number of seconds \(e\.g\. 3600\); got /,
      });
    }
    for (const bad of ["3600", undefined, null, 3600n, {}]) {
      throwsCode(() => app.createToken(claims, bad), "invalid_argument", `ttl ${typeof bad}`, {
        type: TypeError,
        message: /^ttlSeconds must be a number of seconds, got /,
      });
    }
  });

  test("a missing policy is refused unless allowNoPolicy, which mints ap:null like the original", () => {
    const claims = new PeerClaims("g", "p");
    throwsCode(() => app.createToken(claims, 60), "missing_policy", "createToken", {
      message: /policy/,
    });
    const minted = app.mint(claims, { ttlSeconds: 60, allowNoPolicy: true });
    eq(JSON.parse(segments(minted.token).payload).ap, null, "ap is null");
    claims.setAllowPolicy(PeerPolicy.allowAll());
    claims.clearAllowPolicy();
    throwsCode(() => app.createToken(claims, 60), "missing_policy", "after clearAllowPolicy");
  });

  test("JavaScript values of the wrong type are TypeErrors naming the argument", () => {
    const claims = allowAll();
    const cases = [
      [() => new PeerClaims(1, "p"), "groupId must be a string, got number"],
      [() => new PeerClaims("g", null), "peerId must be a string, got null"],
      [() => new PeerClaims("g"), "peerId must be a string, got undefined"],
      [() => new PeerPolicy(["*"], "*"), "groupPattern must be a string, got an array"],
      [() => new AccessToken(undefined, "sk_00"), "apiKey must be a string, got undefined"],
      [() => new AccessToken("kid_x", {}), "apiSecret must be a string, got object"],
      [() => app.createToken({ groupId: "g", peerId: "p" }, 60), "expected an instance of PeerClaims, got a plain object"],
      [() => app.createToken(null, 60), "expected an instance of PeerClaims, got null"],
      [() => app.createToken(new PeerPolicy("*", "*"), 60), "expected an instance of PeerClaims, got an instance of PeerPolicy"],
      [() => claims.setAllowPolicy("*:*"), "expected an instance of PeerPolicy, got string"],
      [() => app.mint(claims), "options must be an object with at least `ttlSeconds`, e.g. { ttlSeconds: 3600 }"],
      [() => app.mint(claims, 3600), "options must be an object, got number"],
      [() => app.mint(claims, {}), "options.ttlSeconds is required: the token's lifetime in seconds, e.g. { ttlSeconds: 3600 }"],
      [() => app.mint(claims, { ttl: 60 }), "options has an unknown option `ttl`; the options are ttlSeconds, nowUnix, issuedAt, notBefore, tokenId, randomTokenId, allowNoPolicy"],
      [() => app.mint(claims, { ttlSeconds: 60, issuedAt: "yes" }), "options.issuedAt must be a boolean, got string"],
      [() => app.mint(claims, { ttlSeconds: 60, tokenId: "a", randomTokenId: true }), "options.tokenId and options.randomTokenId exclude each other; give one"],
      [() => new Verifier(new KeySet(), { leeway: 5 }), "options has an unknown option `leeway`; the options are leewaySeconds, maxTokenLength, backend"],
      [() => new AccessToken(first.api_key, first.api_secret, { ttl: 5 }), "options has an unknown option `ttl`; the options are backend"],
      [() => new AccessToken(first.api_key, first.api_secret, { backend: "openssl" }), 'options.backend must be "node:crypto" or "wasm", got "openssl"'],
      [() => new Verifier(new KeySet(), { backend: 1 }), 'options.backend must be "node:crypto" or "wasm", got number'],
      [() => new Verifier("keys"), "expected an instance of KeySet, got string"],
      [() => Verifier.fromJwks(42), "jwks must be a JWKS (an object or a JSON string), got number"],
      [() => verifierFor().verify(42), "token must be a string, got number"],
      [() => PeerPolicy.allowAll().allows("g"), "peerId must be a string, got undefined"],
      [() => new PeerClaims("g\uD800", "p"), "groupId is not well-formed Unicode: it holds a lone surrogate (U+D800 to U+DFFF); pass valid text"],
      [() => new PeerPolicy("*", "\uDC00*"), "peerPattern is not well-formed Unicode: it holds a lone surrogate (U+D800 to U+DFFF); pass valid text"],
    ];
    for (const [fn, message] of cases) throwsCode(fn, "invalid_argument", message, { message, type: TypeError });
    throwsCode(() => app.mint(claims, { ttlSeconds: 60, nowUnix: -5 }), "invalid_argument", "negative nowUnix", {
      type: RangeError,
      message: "options.nowUnix must be a whole, non-negative number of seconds (e.g. 1735689600); got -5",
    });
    throwsCode(() => verifierFor().verifyAt(first.fixed_clock.token, 1.5), "invalid_argument", "fractional nowUnix", { type: RangeError });
  });

  test("token ids (jti) and the optional claims iat, nbf round-trip", () => {
    const verifier = verifierFor();
    const minted = app.mint(allowAll(), { ttlSeconds: 60, nowUnix: 2_000_000_000, issuedAt: true, notBefore: 2_000_000_000, tokenId: "req-42" });
    eq(segments(minted.token).payload,
      '{"exp":2000000060,"gid":"room","pid":"alice","ap":{"group_id":"*","peer_id":"*"},"iat":2000000000,"nbf":2000000000,"jti":"req-42"}',
      "payload with the extra claims in order");
    const claims = verifier.verifyAt(minted.token, 2_000_000_001);
    deepEq(claims.toJSON(), {
      keyId: first.api_key, groupId: "room", peerId: "alice", allowPolicy: { groupPattern: "*", peerPattern: "*" },
      expiresAt: 2000000060, issuedAt: 2000000000, notBefore: 2000000000, tokenId: "req-42",
    }, "toJSON");
    const random = app.mint(allowAll(), { ttlSeconds: 60, randomTokenId: true });
    const other = app.mint(allowAll(), { ttlSeconds: 60, randomTokenId: true });
    const jti = verifier.verify(random.token).tokenId;
    ok(/^[0-9a-f]{32}$/.test(jti), `random jti ${jti}`);
    ok(jti !== verifier.verify(other.token).tokenId, "random ids differ");
    throwsCode(() => app.mint(allowAll(), { ttlSeconds: 60, tokenId: "" }), "invalid_token_id", "empty jti", {
      message: /token id/,
    });
  });

  // --- policies ----------------------------------------------------------------------------

  test("policy.allows follows the pattern semantics of tokens.md", () => {
    const table = [
      ["*", "anything", true], ["abc", "abc", true], ["abc", "abcd", false], ["ab*", "ab", true],
      ["ab*", "abz", true], ["ab*", "a", false], ["*ab", "xab", true], ["*ab", "abx", false],
      ["a*b", "ab", true], ["a*b", "axxb", true], ["a*a", "a", false], ["a*a", "aa", true],
      ["é*", "éa", true], ["*🙂", "ピア🙂", true],
    ];
    for (const [pattern, value, want] of table) {
      eq(new PeerPolicy("*", pattern).allows("any", value), want, `peer ${pattern} vs ${value}`);
      eq(new PeerPolicy(pattern, "*").allows(value, "any"), want, `group ${pattern} vs ${value}`);
    }
    const policy = new PeerPolicy("myGroup*", "peer-*");
    ok(policy.allows("myGroup1", "peer-7"), "both match");
    ok(!policy.allows("other", "peer-7"), "group mismatch");
    ok(!policy.allows("myGroup1", "bob"), "peer mismatch");
    const claims = new PeerClaims("myGroup1", "peer-1");
    ok(!claims.allows("myGroup1", "peer-2"), "no policy admits no one");
    claims.setAllowPolicy(policy);
    ok(claims.allows("myGroup1", "peer-2"), "claims.allows delegates to the policy");
  });

  test("PeerPolicy text form: parse, toString, toJSON, allowAll", () => {
    const p = PeerPolicy.parse("test:peer-*");
    eq(p.groupPattern, "test", "group");
    eq(p.peerPattern, "peer-*", "peer");
    eq(p.toString(), "test:peer-*", "toString");
    eq(`${p}`, "test:peer-*", "template string");
    deepEq(p.toJSON(), { groupPattern: "test", peerPattern: "peer-*" }, "toJSON");
    const odd = new PeerPolicy("a:b", "c\\d");
    eq(odd.toString(), "a\\:b:c\\\\d", "escaped");
    eq(PeerPolicy.parse(odd.toString()).groupPattern, "a:b", "round trip");
    ok(PeerPolicy.allowAll().isAllowAll, "allowAll");
    ok(!p.isAllowAll, "not allowAll");
    throwsCode(() => PeerPolicy.parse("nocolon"), "invalid_policy", "no colon", {
      message: /GROUP:PEER/,
    });
    throwsCode(() => PeerPolicy.parse("a:b:c"), "invalid_policy", "two colons");
    throwsCode(() => PeerPolicy.parse("a:b\\"), "invalid_policy", "trailing escape");
    throwsCode(() => PeerPolicy.parse(":"), "invalid_group_pattern", "empty patterns", {
      message: /group pattern/,
    });
  });

  test("claims copy their policy: later changes to either side do not leak", () => {
    const claims = new PeerClaims("g", "p");
    const policy = new PeerPolicy("g", "*");
    claims.setAllowPolicy(policy);
    policy.free();
    eq(claims.allowPolicy.groupPattern, "g", "policy freed, claims keep their copy");
    const copy = claims.allowPolicy;
    claims.setAllowPolicy(new PeerPolicy("h", "*"));
    eq(copy.groupPattern, "g", "the getter returned a copy");
    eq(claims.groupId, "g", "groupId");
    eq(claims.peerId, "p", "peerId");
  });

  test("using a freed object is a TypeError that says so, and the package keeps working", () => {
    const message = "this object was freed (by free() or the end of a `using` block); create a new one";
    const freedApp = new AccessToken(first.api_key, first.api_secret);
    freedApp.free();
    throwsCode(() => freedApp.createToken(allowAll(), 60), "invalid_argument", "mint with a freed AccessToken", { message, type: TypeError });
    const freedVerifier = verifierFor();
    freedVerifier.free();
    throwsCode(() => freedVerifier.verify(first.original_wallclock.token), "invalid_argument", "verify with a freed Verifier", { message, type: TypeError });
    const keys = new KeySet();
    keys.free();
    throwsCode(() => new Verifier(keys), "invalid_argument", "a freed argument", { message, type: TypeError });
    ok(verifierFor().verify(first.original_wallclock.token).peerId, "new objects work");
  });

  test("claims, policies and verified claims are plain values: free() changes nothing", () => {
    const policy = new PeerPolicy("a*", "*");
    const claims = new PeerClaims("g", "p");
    claims.setAllowPolicy(policy);
    policy.free();
    claims.free();
    ok(policy.allows("ab", "x"), "a policy works after free()");
    eq(claims.allowPolicy, policy, "claims keep the policy (policies are immutable)");
    const token = app.createToken(claims, 60);
    const verified = verifierFor().verify(token);
    verified.free();
    eq(verified.groupId, "g", "verified claims work after free()");
    ok(verified.allows("ab", "anyone") && !verified.allows("b", "x"), "the token's policy");
    let threw = false;
    try {
      policy.groupPattern = "zz";
    } catch {
      threw = true;
    }
    ok(threw && policy.groupPattern === "a*", "a policy is immutable");
    throwsCode(() => new api.VerifiedClaims(["kid", "g", "p"]), "invalid_argument", "VerifiedClaims are only made by a verifier", { type: TypeError });
  });

  test("every object reports the backend it uses", () => {
    eq(app.backend, backend, "AccessToken");
    eq(verifierFor().backend, backend, "Verifier");
    eq(Verifier.fromJwks(verifierFor().toJwks()).backend, backend, "Verifier.fromJwks");
  });

  test("hostile tokens (signature malleation, small-order R, non-canonical S, header attacks) get the Rust crate's outcome", () => {
    const hostile = vectors.hostile;
    ok(hostile && hostile.cases.length >= 40, "the corpus test/hostile-tokens.json was given");
    const verifier = Verifier.fromJwks(hostile.jwks);
    eq(verifier.backend, backend, "backend");
    let rejected = 0;
    for (const c of hostile.cases) {
      let got;
      try {
        got = { ok: true, value: verifier.verifyAt(c.token, hostile.now_unix).peerId };
      } catch (e) {
        if (!isPulseBeamError(e)) throw e;
        got = { ok: false, code: e.code, message: e.message };
        rejected++;
      }
      const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
      deepEq(sorted(got), sorted(c.outcome), c.name);
    }
    ok(rejected > hostile.cases.length / 2, `${rejected} rejected`);
  });

  // --- keys --------------------------------------------------------------------------------

  test("KeyPair.generate makes working, distinct credentials in the documented format", () => {
    const a = KeyPair.generate();
    const b = KeyPair.generate();
    ok(/^kid_[0-9a-f]{16}$/.test(a.apiKey), `api key ${a.apiKey}`);
    ok(/^sk_[0-9a-f]{64}$/.test(a.apiSecret), "api secret format");
    ok(a.apiKey !== b.apiKey && a.apiSecret !== b.apiSecret, "distinct pairs");
    const app = new AccessToken(a.apiKey, a.apiSecret);
    eq(app.publicKey.toHex(), a.publicKey.toHex(), "the secret derives the public key");
    const keys = new KeySet();
    keys.add(a.apiKey, a.publicKey);
    const claims = new Verifier(keys).verify(app.createToken(allowAll(), 60));
    eq(claims.keyId, a.apiKey, "verifies under its kid");
    throwsCode(() => Verifier.fromJwks(b.toJwk()).verify(app.createToken(allowAll(), 60)), "unknown_key_id", "other pair");
  });

  test("public keys export and import as hex and JWK (RFC 8037)", () => {
    const pk = PublicKey.fromHex(first.public_key_hex);
    eq(pk.toHex(), first.public_key_hex, "hex round trip");
    eq(String(pk), first.public_key_hex, "toString");
    eq(new AccessToken(first.api_key, first.api_secret).publicKey.toHex(), first.public_key_hex, "derived from the seed");
    const jwk = pk.toJwk(first.api_key);
    deepEq(jwk, { kty: "OKP", crv: "Ed25519", x: b64urlEncode(Uint8Array.from(first.public_key_hex.match(/../g), (h) => parseInt(h, 16))), kid: first.api_key, alg: "EdDSA", use: "sig" }, "jwk");
    eq(PublicKey.fromJwk(jwk).toHex(), first.public_key_hex, "jwk object round trip");
    eq(PublicKey.fromJwk(JSON.stringify(jwk)).toHex(), first.public_key_hex, "jwk text round trip");
    throwsCode(() => pk.toJwk(""), "invalid_api_key", "empty kid");
    throwsCode(() => PublicKey.fromHex("zz"), "invalid_public_key", "not hex", { message: /^invalid public key/ });
    throwsCode(() => PublicKey.fromHex("abcd"), "invalid_public_key", "short", { message: /^invalid public key/ });
    throwsCode(() => PublicKey.fromHex("00".repeat(32)), "invalid_public_key", "small order");
    throwsCode(() => PublicKey.fromJwk({ ...jwk, d: "secret" }), "invalid_jwk", "private part", {
      message: /private/,
    });
    throwsCode(() => PublicKey.fromJwk({ ...jwk, crv: "P-256" }), "invalid_jwk", "other curve");
    throwsCode(() => PublicKey.fromJwk("{"), "invalid_jwk", "not JSON");
  });

  test("key sets: add, has, size, duplicates, JWKS round trip and rotation", () => {
    const keys = new KeySet();
    eq(keys.size, 0, "empty");
    keys.add("kid_old", PublicKey.fromHex(first.public_key_hex));
    const fresh = KeyPair.generate();
    keys.add(fresh.apiKey, fresh.publicKey);
    eq(keys.size, 2, "two keys");
    ok(keys.has("kid_old") && !keys.has("kid_other"), "has");
    throwsCode(() => keys.add("kid_old", fresh.publicKey), "duplicate_key_id", "duplicate", {
      message: /duplicate/,
    });
    throwsCode(() => keys.add("", fresh.publicKey), "invalid_api_key", "empty kid");
    const again = KeySet.fromJwks(keys.toJwks());
    eq(again.size, 2, "JWKS round trip");
    deepEq(again.toJwks(), keys.toJwks(), "same JWKS");
    throwsCode(() => KeySet.fromJwks({ keys: [{ kty: "OKP", crv: "Ed25519", x: fresh.toJwk().x }] }), "invalid_jwk", "no kid");
    throwsCode(() => KeySet.fromJwks({ keys: "nope" }), "invalid_jwk", "keys not an array");
    throwsCode(() => KeySet.fromJwks("[]"), "invalid_jwk", "an array");
    // Rotation: tokens of the old and the new key both verify.
    const oldApp = new AccessToken("kid_old", first.api_secret);
    const newApp = new AccessToken(fresh.apiKey, fresh.apiSecret);
    const verifier = new Verifier(again);
    eq(verifier.verify(oldApp.createToken(allowAll(), 60)).keyId, "kid_old", "old key");
    eq(verifier.verify(newApp.createToken(allowAll(), 60)).keyId, fresh.apiKey, "new key");
  });

  test("errors are recognisable: isPulseBeamError, name and code", () => {
    let caught;
    try {
      new PeerClaims("", "p");
    } catch (e) {
      caught = e;
    }
    ok(isPulseBeamError(caught), "isPulseBeamError on a thrown error");
    ok(!isPulseBeamError(new Error("x")), "not on a plain Error");
    ok(!isPulseBeamError({ name: "PulseBeamError", code: "x" }), "not on a look-alike object");
    ok(caught.stack === undefined || typeof caught.stack === "string", "has a stack (where the runtime gives one)");
  });

  return list;
}

/** Runs every case and reports `{ name, ok, error }` (for runtimes driven from outside). */
export function runAll(api, vectors, expectedBackend) {
  return allCases(api, vectors, expectedBackend).map(({ name, fn }) => {
    try {
      fn();
      return { name, ok: true };
    } catch (e) {
      return { name, ok: false, error: `${e?.name}: ${e?.message}\n${e?.stack ?? ""}` };
    }
  });
}
