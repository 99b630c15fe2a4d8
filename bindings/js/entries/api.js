// The public API, shared by every entry point. Each entry point initialises the WebAssembly
// module its own way (file read, fetch, or an imported module) before re-exporting this.
//
// Short-lived values (PeerClaims, PeerPolicy, VerifiedClaims) are plain JavaScript objects: they
// hold no WebAssembly memory, so the garbage collector reclaims them like any other object, and
// they cross into WebAssembly only as strings and numbers. Long-lived objects (AccessToken,
// Verifier, KeySet, PublicKey, KeyPair) hold the parsed keys in WebAssembly memory.
//
// Where the runtime has a synchronous Ed25519 in `node:crypto` (Node.js, Bun, Deno, workerd
// with `nodejs_compat`), tokens are signed and signatures checked by it (once loaded, see
// `warmNative`); the WebAssembly module
// keeps everything else (claims, validation, policies, the exact bytes, the strict checks that
// make the runtime's verify accept exactly what ed25519-dalek's `verify_strict` accepts, errors).
import {
  AccessTokenCore,
  checkPeerClaims,
  checkPeerPolicy,
  KeyPair,
  KeySet,
  parsePeerPolicy,
  peerPolicyAllows,
  peerPolicyText,
  PublicKey,
  VerifierCore,
} from "./pulsebeam.js";

export { KeyPair, KeySet, PublicKey };

// --- errors ------------------------------------------------------------------------------------

function pulseBeamError(Type, code, message) {
  const error = new Type(message);
  error.name = "PulseBeamError";
  error.code = code;
  return error;
}

/** What `value` is, for messages (as the WebAssembly side says it). */
function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

function expectInstance(value, Class) {
  if (value instanceof Class) return;
  const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value !== "object" ? typeof value
    : [Object, undefined].includes(value.constructor) ? "a plain object" : `an instance of ${value.constructor.name}`;
  throw pulseBeamError(TypeError, "invalid_argument", `expected an instance of ${Class.name}, got ${got}`);
}

function expectString(value, name) {
  if (typeof value !== "string") {
    throw pulseBeamError(TypeError, "invalid_argument", `${name} must be a string, got ${describe(value)}`);
  }
}

/**
 * Whether `value` is an error thrown by this package (a `PulseBeamError` with a `code`).
 * @param {unknown} value
 * @returns {boolean}
 */
export function isPulseBeamError(value) {
  return value instanceof Error && value.name === "PulseBeamError" &&
    typeof /** @type {{ code?: unknown }} */ (value).code === "string";
}

// --- the runtime's own Ed25519 -----------------------------------------------------------------

// Loading `node:crypto` costs more than many wasm signatures (about 3 ms in Node.js, 10 in Bun,
// 30 to 80 in Deno, whose `process` and timers load its Node layer), so it is not loaded at import
// nor on the first calls: objects made without a `backend` option start on the wasm Ed25519 and
// move to the runtime's own after WARM_CALLS calls in the process. A cold start (import, then the
// first token) costs what it costs on the wasm backend, and a process that makes few tokens never
// pays for the load.

/** Calls on the wasm Ed25519 after which `node:crypto` is loaded. */
const WARM_CALLS = 64;

/**
 * Whether the runtime has Node's built-in modules (Node.js 20.16+, Bun, Deno 2, workerd with
 * nodejs_compat). Deno is told by `Deno`, since touching its `process` loads its Node layer.
 */
const hasBuiltins = typeof globalThis.Deno?.version?.deno === "string" ||
  typeof globalThis.process?.getBuiltinModule === "function";

/**
 * The backend this runtime uses: `"node:crypto"` (the runtime's own Ed25519) where it has
 * Node's built-in modules, else `"wasm"` (the package's). Both make the same tokens and accept
 * exactly the same ones.
 * @type {"node:crypto" | "wasm"}
 */
export const backend = hasBuiltins ? "node:crypto" : "wasm";

/** `{ crypto, Buffer }` once loaded; `null` when the runtime turned out to have no usable Ed25519. */
let native;
let calls = 0;

function loadNative() {
  if (native !== undefined) return native;
  native = null;
  try {
    const { getBuiltinModule } = globalThis.process;
    const crypto = getBuiltinModule("node:crypto");
    const { Buffer } = getBuiltinModule("node:buffer") ?? {};
    const usable = typeof crypto?.sign === "function" && typeof crypto.verify === "function" &&
      typeof crypto.createPrivateKey === "function" && typeof crypto.createPublicKey === "function" &&
      typeof Buffer?.from === "function";
    if (usable) native = { crypto, Buffer };
  } catch {
    // No usable node:crypto: the wasm Ed25519 stays.
  }
  return native;
}

/** The runtime's Ed25519 if it is loaded, loading it when due; undefined while it is not. */
function warmNative() {
  if (native !== undefined || !hasBuiltins) return native ?? undefined;
  if (++calls > WARM_CALLS) loadNative();
  return native ?? undefined;
}

const BACKENDS = ["node:crypto", "wasm"];

/** `options.backend`: `"node:crypto"` (loaded now), `"wasm"`, or undefined for the default. */
function askedBackend(options) {
  const asked = options !== null && typeof options === "object" ? options.backend : undefined;
  if (asked === undefined) return hasBuiltins ? undefined : "wasm";
  if (!BACKENDS.includes(asked)) {
    throw pulseBeamError(TypeError, "invalid_argument",
      `options.backend must be "node:crypto" or "wasm", got ${typeof asked === "string" ? JSON.stringify(asked) : describe(asked)}`);
  }
  if (asked === "node:crypto" && !(hasBuiltins && loadNative())) {
    throw pulseBeamError(TypeError, "invalid_argument",
      'options.backend "node:crypto" is not available here: this runtime has no synchronous Ed25519 in node:crypto; use "wasm" or leave the option out');
  }
  return asked;
}

// PKCS#8 DER of an Ed25519 private key (RFC 8410): this fixed prefix, then the 32-byte seed.
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/**
 * The runtime's private key for a secret that the WebAssembly side has already parsed (so it is
 * `anything_` then 64 hex digits), or undefined if the runtime derives another public key.
 */
function nativePrivateKey(apiSecret, core) {
  const { crypto, Buffer } = native;
  const der = Buffer.alloc(PKCS8_PREFIX.length + 32);
  der.set(PKCS8_PREFIX);
  der.write(apiSecret.slice(apiSecret.indexOf("_") + 1), PKCS8_PREFIX.length, 32, "hex");
  try {
    const key = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    const publicKey = core.publicKey;
    try {
      const x = crypto.createPublicKey(key).export({ format: "jwk" }).x;
      return Buffer.from(x, "base64url").toString("hex") === publicKey.toHex() ? key : undefined;
    } finally {
      publicKey.free();
    }
  } finally {
    der.fill(0);
  }
}

// --- policies and claims: plain values ---------------------------------------------------------

/** Set while the package builds a policy from patterns it has already checked. */
let checked = false;

function policyOf(groupPattern, peerPattern) {
  checked = true;
  try {
    return new PeerPolicy(groupPattern, peerPattern);
  } finally {
    checked = false;
  }
}

/**
 * Which peers a token's holder may reach: a group pattern and a peer pattern, both of which
 * must match. A pattern is `*`, an exact id, `prefix*`, `*suffix` or `prefix*suffix` (1 to 16
 * characters, at most one `*`). Immutable.
 */
export class PeerPolicy {
  #group;
  #peer;

  /**
   * @param {string} groupPattern
   * @param {string} peerPattern
   */
  constructor(groupPattern, peerPattern) {
    if (!checked) checkPeerPolicy(groupPattern, peerPattern);
    this.#group = groupPattern;
    this.#peer = peerPattern;
  }

  /** Parses the `GROUP:PEER` text form, e.g. `"room1:*"`. @param {string} text */
  static parse(text) {
    const [group, peer] = parsePeerPolicy(text);
    return policyOf(group, peer);
  }

  /** The policy `*:*`, which admits every peer of the project. */
  static allowAll() {
    return policyOf("*", "*");
  }

  /** The group pattern, as written. */
  get groupPattern() {
    return this.#group;
  }

  /** The peer pattern, as written. */
  get peerPattern() {
    return this.#peer;
  }

  /** Whether this is `*:*`. */
  get isAllowAll() {
    return this.#group === "*" && this.#peer === "*";
  }

  /** Whether the policy admits the peer `peerId` of the group `groupId`. */
  allows(groupId, peerId) {
    return peerPolicyAllows(this.#group, this.#peer, groupId, peerId);
  }

  /** The `GROUP:PEER` text form, which `PeerPolicy.parse` reads back. */
  toString() {
    return peerPolicyText(this.#group, this.#peer);
  }

  /** `{ groupPattern, peerPattern }`, for `JSON.stringify`. */
  toJSON() {
    return { groupPattern: this.#group, peerPattern: this.#peer };
  }

  /** Nothing to free: a policy is a plain value. Kept so that code calling it still runs. */
  free() {}

  [Symbol.dispose]() {}
}

/** The parts of claims, for the minting side. */
let claimParts;

/**
 * The identity of a peer (its group id and peer id) and the policy saying whom it may reach.
 * Ids are 1 to 16 characters, without control characters or `*`.
 */
export class PeerClaims {
  #groupId;
  #peerId;
  /** @type {PeerPolicy | undefined} */
  #policy;

  static {
    claimParts = (claims) => [claims.#groupId, claims.#peerId, claims.#policy];
  }

  /**
   * @param {string} groupId
   * @param {string} peerId
   */
  constructor(groupId, peerId) {
    checkPeerClaims(groupId, peerId);
    this.#groupId = groupId;
    this.#peerId = peerId;
  }

  /** Sets the allow policy (policies are immutable, so later uses of it change nothing here). */
  setAllowPolicy(policy) {
    expectInstance(policy, PeerPolicy);
    this.#policy = policy;
  }

  /** Removes the allow policy. */
  clearAllowPolicy() {
    this.#policy = undefined;
  }

  /** The group id (`gid`). */
  get groupId() {
    return this.#groupId;
  }

  /** The peer id (`pid`). */
  get peerId() {
    return this.#peerId;
  }

  /** The allow policy (`ap`), or `undefined` when none is set. */
  get allowPolicy() {
    return this.#policy;
  }

  /** Whether the holder may reach the peer `peerId` of the group `groupId`; `false` without a policy. */
  allows(groupId, peerId) {
    if (this.#policy) return this.#policy.allows(groupId, peerId);
    expectString(groupId, "groupId");
    expectString(peerId, "peerId");
    return false;
  }

  /** Nothing to free: claims are a plain value. Kept so that code calling it still runs. */
  free() {}

  [Symbol.dispose]() {}
}

// --- minting -----------------------------------------------------------------------------------

const ACCESS_TOKEN_OPTIONS = ["backend"];

function checkOptions(options, known) {
  if (options === undefined || options === null) return;
  if (typeof options !== "object" || Array.isArray(options)) {
    throw pulseBeamError(TypeError, "invalid_argument", `options must be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw pulseBeamError(TypeError, "invalid_argument",
        `options has an unknown option \`${key}\`; the options are ${known.join(", ")}`);
    }
  }
}

/**
 * The minting side: an API key and its secret, parsed once. Keep it on the server; the secret
 * never leaves it.
 */
export class AccessToken {
  #core;
  /** The runtime's private key, once made. */
  #key;
  /** The secret, kept only until the runtime's key is made (or it is known it will not be). */
  #secret;

  /**
   * @param {string} apiKey
   * @param {string} apiSecret
   * @param {{ backend?: "node:crypto" | "wasm" }} [options]
   */
  constructor(apiKey, apiSecret, options) {
    checkOptions(options, ACCESS_TOKEN_OPTIONS);
    const asked = askedBackend(options);
    this.#core = new AccessTokenCore(apiKey, apiSecret);
    if (asked === "node:crypto") this.#key = nativePrivateKey(apiSecret, this.#core);
    else if (asked === undefined) this.#secret = apiSecret;
  }

  /** The runtime's private key when it is to be used now, else undefined (wasm signs). */
  #nativeKey() {
    if (this.#key !== undefined || this.#secret === undefined) return this.#key;
    if (warmNative()) {
      this.#key = nativePrivateKey(this.#secret, this.#core);
      this.#secret = undefined;
    }
    return this.#key;
  }

  /** Which Ed25519 signs this key's tokens now: `"node:crypto"` or `"wasm"`. */
  get backend() {
    return this.#key ? "node:crypto" : "wasm";
  }

  /** The API key, which tokens carry as `kid`. */
  get apiKey() {
    return this.#core.apiKey;
  }

  /** The public key that verifies this key's tokens. */
  get publicKey() {
    return this.#core.publicKey;
  }

  /**
   * Mints a token for `claims`, valid for `ttlSeconds` seconds from now (`Date.now()`).
   * @param {PeerClaims} claims
   * @param {number} ttlSeconds
   * @returns {string}
   */
  createToken(claims, ttlSeconds) {
    expectInstance(claims, PeerClaims);
    const [groupId, peerId, policy] = claimParts(claims);
    const key = this.#nativeKey();
    const text = this.#core.createToken(groupId, peerId, policy?.groupPattern, policy?.peerPattern, ttlSeconds, key !== undefined);
    return key ? sign(text, key) : text;
  }

  /**
   * Mints a token with options; returns the token with its `issuedAt` and `expiresAt`.
   * @param {PeerClaims} claims
   * @param {import("./api.d.ts").MintOptions} options
   */
  mint(claims, options) {
    expectInstance(claims, PeerClaims);
    const [groupId, peerId, policy] = claimParts(claims);
    const key = this.#nativeKey();
    const [text, issuedAt, expiresAt] = this.#core.mint(groupId, peerId, policy?.groupPattern, policy?.peerPattern, options, key !== undefined);
    return { token: key ? sign(text, key) : text, issuedAt, expiresAt };
  }

  /** Frees the WebAssembly memory now rather than at garbage collection. */
  free() {
    this.#core.free();
    this.#key = undefined;
    this.#secret = undefined;
  }

  [Symbol.dispose]() {
    this.free();
  }
}

/** `input.signature` with the runtime's Ed25519. */
function sign(input, key) {
  const { crypto, Buffer } = native;
  // The signing input is ASCII (base64url and a dot): its UTF-8 bytes are its characters.
  return `${input}.${crypto.sign(null, Buffer.from(input), key).toString("base64url")}`;
}

// --- verifying ---------------------------------------------------------------------------------

/** Set while the package builds verified claims. */
let verified = false;

/** The claims of a token whose signature, algorithm, key and time checks all passed. */
export class VerifiedClaims {
  #fields;
  /** @type {PeerPolicy | null | undefined} */
  #policy;

  constructor(fields) {
    if (!verified) {
      throw pulseBeamError(TypeError, "invalid_argument", "VerifiedClaims come from Verifier.verify; they cannot be made directly");
    }
    this.#fields = fields;
  }

  /** The `kid` of the key that signed the token. */
  get keyId() {
    return this.#fields[0];
  }

  /** The group id (`gid`). */
  get groupId() {
    return this.#fields[1];
  }

  /** The peer id (`pid`). */
  get peerId() {
    return this.#fields[2];
  }

  /** The allow policy (`ap`), or `undefined` when the token's `ap` is `null`. */
  get allowPolicy() {
    if (this.#policy === undefined) this.#policy = this.#fields[3] ? policyOf(this.#fields[3], this.#fields[4]) : null;
    return this.#policy ?? undefined;
  }

  /** `exp`, Unix seconds. */
  get expiresAt() {
    return Number(this.#fields[5]);
  }

  /** `iat`, Unix seconds, when present. */
  get issuedAt() {
    return this.#fields[6] ? Number(this.#fields[6]) : undefined;
  }

  /** `nbf`, Unix seconds, when present. */
  get notBefore() {
    return this.#fields[7] ? Number(this.#fields[7]) : undefined;
  }

  /** `jti`, when present. */
  get tokenId() {
    return this.#fields[8] || undefined;
  }

  /** Whether the holder may reach the peer `peerId` of the group `groupId`; `false` without a policy. */
  allows(groupId, peerId) {
    const policy = this.allowPolicy;
    if (policy) return policy.allows(groupId, peerId);
    expectString(groupId, "groupId");
    expectString(peerId, "peerId");
    return false;
  }

  /** The claims as a plain object, for `JSON.stringify` and logs. */
  toJSON() {
    const out = {
      keyId: this.keyId,
      groupId: this.groupId,
      peerId: this.peerId,
      allowPolicy: this.allowPolicy?.toJSON() ?? null,
      expiresAt: this.expiresAt,
    };
    if (this.issuedAt !== undefined) out.issuedAt = this.issuedAt;
    if (this.notBefore !== undefined) out.notBefore = this.notBefore;
    if (this.tokenId !== undefined) out.tokenId = this.tokenId;
    return out;
  }

  /** Nothing to free: verified claims are a plain value. Kept so that code calling it still runs. */
  free() {}

  [Symbol.dispose]() {}
}

function claimsOf(packed) {
  verified = true;
  try {
    return new VerifiedClaims(packed.split("\0"));
  } finally {
    verified = false;
  }
}

/** The runtime's check of a signature by the key at a position of `core`, for `core.verify`. */
function nativeVerifier(core) {
  const { crypto, Buffer } = native;
  const keys = [];
  for (let i = 0; i < core.keyCount; i++) {
    const bytes = core.nativeKey(i);
    keys.push(bytes === undefined ? null : crypto.createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(bytes).toString("base64url") },
      format: "jwk",
    }));
  }
  // Buffers over the same bytes: Deno's verify takes a Buffer faster than a plain Uint8Array.
  const view = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return (position, message, signature) => crypto.verify(null, view(message), keys[position], view(signature));
}

/** The core made by `Verifier.fromJwks`, while it constructs the verifier around it. */
let fromJwksCore;

/**
 * Verifies tokens against a key set: length bound, `alg` exactly `EdDSA`, a known `kid`, a
 * strict Ed25519 signature, then the claims (`exp` required, `nbf` honoured, ids and patterns
 * valid).
 */
export class Verifier {
  #core;
  /** The runtime's check of a signature, once made. */
  #native;
  /** Whether to make it when the runtime's Ed25519 is loaded (no `backend` option given). */
  #auto = false;

  /**
   * @param {KeySet} keys
   * @param {import("./api.d.ts").VerifierOptions} [options]
   */
  constructor(keys, options) {
    const core = fromJwksCore ?? new VerifierCore(keys, options);
    try {
      const asked = askedBackend(options);
      if (asked === "node:crypto") this.#native = nativeVerifier(core);
      this.#auto = asked === undefined;
    } catch (e) {
      core.free();
      throw e;
    }
    this.#core = core;
  }

  /**
   * A verifier trusting the keys of a JWKS document (`{"keys":[…]}`) or a single JWK, as an
   * object or JSON text.
   */
  static fromJwks(jwks, options) {
    fromJwksCore = VerifierCore.fromJwks(jwks, options);
    try {
      return new Verifier(undefined, options);
    } finally {
      fromJwksCore = undefined;
    }
  }

  /** The runtime's check when it is to be used now, else undefined (wasm checks). */
  #nativeCheck() {
    if (this.#native !== undefined || !this.#auto) return this.#native;
    if (warmNative()) {
      this.#native = nativeVerifier(this.#core);
      this.#auto = false;
    }
    return this.#native;
  }

  /** Which Ed25519 checks signatures now: `"node:crypto"` or `"wasm"`. */
  get backend() {
    return this.#native ? "node:crypto" : "wasm";
  }

  /** The clock skew tolerated on `exp` and `nbf`, in seconds. */
  get leewaySeconds() {
    return this.#core.leewaySeconds;
  }

  /** The trusted keys as a JWKS document. */
  toJwks() {
    return this.#core.toJwks();
  }

  /**
   * Verifies `token` at the current time (`Date.now()`) and returns its claims.
   * @param {string} token
   */
  verify(token) {
    return claimsOf(this.#core.verify(token, this.#nativeCheck()));
  }

  /**
   * Verifies `token` as if the time were `nowUnix` (Unix seconds).
   * @param {string} token
   * @param {number} nowUnix
   */
  verifyAt(token, nowUnix) {
    return claimsOf(this.#core.verifyAt(token, nowUnix, this.#nativeCheck()));
  }

  /** Frees the WebAssembly memory now rather than at garbage collection. */
  free() {
    this.#core.free();
    this.#native = undefined;
    this.#auto = false;
  }

  [Symbol.dispose]() {
    this.free();
  }
}
