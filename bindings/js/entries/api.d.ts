export { KeyPair, KeySet, PublicKey } from "./pulsebeam.js";
export type {
  Backend,
  ErrorCode,
  Jwk,
  Jwks,
  MintedToken,
  MintOptions,
  PulseBeamError,
  VerifiedClaimsJSON,
  VerifierOptions,
} from "./pulsebeam.js";
import type {
  Backend,
  Jwks,
  Jwk,
  KeySet,
  MintedToken,
  MintOptions,
  PublicKey,
  PulseBeamError,
  VerifiedClaimsJSON,
  VerifierOptions,
} from "./pulsebeam.js";

/** Whether `value` is an error thrown by this package (a `PulseBeamError` with a `code`). */
export declare function isPulseBeamError(value: unknown): value is PulseBeamError;

/**
 * Which Ed25519 this runtime uses: `"node:crypto"` (the runtime's own, in Node.js 20.16+, Bun,
 * Deno 2 and workerd with `nodejs_compat`) or `"wasm"` (the package's, everywhere else). Both make
 * the same tokens and accept exactly the same ones. Objects made without a `backend` option start
 * on `"wasm"` and move to `"node:crypto"` after the process's first 64 calls, so that a cold start
 * does not pay for loading `node:crypto`.
 */
export declare const backend: Backend;

/**
 * Which peers a token's holder may reach: a group pattern and a peer pattern, both of which
 * must match. A pattern is `*`, an exact id, `prefix*`, `*suffix` or `prefix*suffix` (1 to 16
 * characters, at most one `*`). A plain, immutable value.
 */
export declare class PeerPolicy {
  #private;
  /**
   * A policy from a group pattern and a peer pattern, e.g. `new PeerPolicy("room-*", "*")`.
   *
   * Throws `invalid_group_pattern` or `invalid_peer_pattern` for a pattern that is empty,
   * longer than 16 characters, holds a control character or more than one `*`.
   */
  constructor(groupPattern: string, peerPattern: string);
  /**
   * Parses the `GROUP:PEER` text form (as `pulsebeam token --allow`), e.g. `"room1:*"`. A
   * literal `:` or `\` inside a pattern is written `\:` or `\\`.
   *
   * Throws `invalid_policy` when the text is not `GROUP:PEER`, else as the constructor.
   */
  static parse(text: string): PeerPolicy;
  /** The policy `*:*`, which admits every peer of the project. */
  static allowAll(): PeerPolicy;
  /** The group pattern, as written. */
  readonly groupPattern: string;
  /** The peer pattern, as written. */
  readonly peerPattern: string;
  /** Whether this is `*:*`. */
  readonly isAllowAll: boolean;
  /** Whether the policy admits the peer `peerId` of the group `groupId`. */
  allows(groupId: string, peerId: string): boolean;
  /** The `GROUP:PEER` text form, which `PeerPolicy.parse` reads back. */
  toString(): string;
  /** `{ groupPattern, peerPattern }`, for `JSON.stringify`. */
  toJSON(): { groupPattern: string; peerPattern: string };
  /** Does nothing: a policy is a plain value (kept so that code written for 0.1 runs). */
  free(): void;
  [Symbol.dispose](): void;
}

/**
 * The identity of a peer (its group id and peer id) and the policy saying whom it may reach.
 * Ids are 1 to 16 characters, without control characters or `*`. A plain value.
 */
export declare class PeerClaims {
  #private;
  /**
   * Claims for the peer `peerId` in the group `groupId`, with no policy yet.
   *
   * Throws `invalid_group_id` or `invalid_peer_id` for an id that breaks the rules.
   */
  constructor(groupId: string, peerId: string);
  /** Sets the allow policy. Policies are immutable: using it elsewhere changes nothing here. */
  setAllowPolicy(policy: PeerPolicy): void;
  /** Removes the allow policy. */
  clearAllowPolicy(): void;
  /** The group id (`gid`). */
  readonly groupId: string;
  /** The peer id (`pid`). */
  readonly peerId: string;
  /** The allow policy (`ap`), or `undefined` when none is set. */
  readonly allowPolicy: PeerPolicy | undefined;
  /**
   * Whether the holder of these claims may reach the peer `peerId` of the group `groupId`;
   * `false` without a policy.
   */
  allows(groupId: string, peerId: string): boolean;
  /** Does nothing: claims are a plain value (kept so that code written for 0.1 runs). */
  free(): void;
  [Symbol.dispose](): void;
}

/** How an `AccessToken` signs. */
export interface AccessTokenOptions {
  /**
   * Which Ed25519 signs: the runtime's own `"node:crypto"` (from the first call; without the
   * option, from the process's 65th call where the runtime has it) or the package's `"wasm"`
   * (everywhere). Both make the same tokens.
   */
  backend?: Backend;
}

/**
 * The minting side: an API key and its secret, parsed once. Keep it on the server; the
 * secret never leaves it. Holds WebAssembly memory until garbage collection or `free()`.
 */
export declare class AccessToken {
  #private;
  /**
   * Credentials from an API key (`kid_…`) and its secret (`sk_` + 64 hex digits).
   *
   * Throws `invalid_api_secret` or `invalid_api_key`, saying what is wrong, and
   * `invalid_argument` for a bad option.
   */
  constructor(apiKey: string, apiSecret: string, options?: AccessTokenOptions);
  /** Which Ed25519 signs this key's tokens now. */
  readonly backend: Backend;
  /** The API key, which tokens carry as `kid`. */
  readonly apiKey: string;
  /** The public key that verifies this key's tokens. */
  readonly publicKey: PublicKey;
  /**
   * Mints a token for `claims`, valid for `ttlSeconds` seconds from now (`Date.now()`).
   * The bytes are those the original `@pulsebeam/server` produced for the same inputs and
   * second.
   *
   * Throws `missing_policy` when the claims have no allow policy (use
   * `PeerPolicy.allowAll()` to admit everyone), `zero_ttl`, `ttl_too_long` or `invalid_ttl`.
   */
  createToken(claims: PeerClaims, ttlSeconds: number): string;
  /**
   * Mints a token with options: a pinned time (`nowUnix`), extra claims (`iat`, `nbf`,
   * `jti`), or no policy. Returns the token with its `issuedAt` and `expiresAt`.
   *
   * Throws as `createToken`, `invalid_token_id` for a bad `tokenId`, and `invalid_argument`
   * for an unknown or mistyped option.
   */
  mint(claims: PeerClaims, options: MintOptions): MintedToken;
  /** Frees the WebAssembly memory now rather than at garbage collection. */
  free(): void;
  [Symbol.dispose](): void;
}

/** The claims of a token whose signature, algorithm, key and time checks all passed. A plain value. */
export declare class VerifiedClaims {
  #private;
  private constructor();
  /** The `kid` of the key that signed the token. */
  readonly keyId: string;
  /** The group id (`gid`). */
  readonly groupId: string;
  /** The peer id (`pid`). */
  readonly peerId: string;
  /** The allow policy (`ap`), or `undefined` when the token's `ap` is `null`. */
  readonly allowPolicy: PeerPolicy | undefined;
  /** `exp`, Unix seconds. */
  readonly expiresAt: number;
  /** `iat`, Unix seconds, when present. */
  readonly issuedAt: number | undefined;
  /** `nbf`, Unix seconds, when present. */
  readonly notBefore: number | undefined;
  /** `jti`, when present. */
  readonly tokenId: string | undefined;
  /**
   * Whether the token's holder may reach the peer `peerId` of the group `groupId`; `false`
   * when the token has no policy.
   */
  allows(groupId: string, peerId: string): boolean;
  /** The claims as a plain object, for `JSON.stringify` and logs. */
  toJSON(): VerifiedClaimsJSON;
  /** Does nothing: verified claims are a plain value (kept so that code written for 0.1 runs). */
  free(): void;
  [Symbol.dispose](): void;
}

/**
 * Verifies tokens against a key set: length bound, `alg` exactly `EdDSA`, a known `kid`, a
 * strict Ed25519 signature, then the claims (`exp` required, `nbf` honoured, ids and patterns
 * valid). Holds WebAssembly memory until garbage collection or `free()`.
 */
export declare class Verifier {
  #private;
  /**
   * A verifier trusting the keys of `keys` (copied: later changes to the set do not
   * affect it).
   *
   * Throws `invalid_argument` for an unknown or mistyped option.
   */
  constructor(keys: KeySet, options?: VerifierOptions);
  /**
   * A verifier trusting the keys of a JWKS document (`{"keys":[…]}`) or a single JWK, as
   * an object or JSON text.
   *
   * Throws as `KeySet.fromJwks`, and `invalid_argument` for a bad option.
   */
  static fromJwks(jwks: Jwks | Jwk | string, options?: VerifierOptions): Verifier;
  /** Which Ed25519 checks signatures now. */
  readonly backend: Backend;
  /** The clock skew tolerated on `exp` and `nbf`, in seconds. */
  readonly leewaySeconds: number;
  /** The trusted keys as a JWKS document. */
  toJwks(): Jwks;
  /**
   * Verifies `token` at the current time (`Date.now()`) and returns its claims.
   *
   * Throws, with distinct codes: `token_too_large`, `malformed_token`,
   * `unsupported_algorithm`, `missing_key_id`, `unknown_key_id`, `invalid_signature`,
   * `token_expired`, `token_not_yet_valid`, `missing_claim`, `invalid_claim`.
   */
  verify(token: string): VerifiedClaims;
  /**
   * Verifies `token` as if the time were `nowUnix` (Unix seconds).
   *
   * Throws as `verify`, and `invalid_argument` for a bad `nowUnix`.
   */
  verifyAt(token: string, nowUnix: number): VerifiedClaims;
  /** Frees the WebAssembly memory now rather than at garbage collection. */
  free(): void;
  [Symbol.dispose](): void;
}
