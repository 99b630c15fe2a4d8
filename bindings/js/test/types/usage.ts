// Type-checked with `deno check`: the shipped declarations accept the documented API and refuse
// misuse (each `@ts-expect-error` fails the check if the line it covers type-checks).
import {
  AccessToken,
  type ErrorCode,
  isPulseBeamError,
  type Jwk,
  type Jwks,
  KeyPair,
  KeySet,
  type MintedToken,
  PeerClaims,
  PeerPolicy,
  PublicKey,
  type VerifiedClaims,
  Verifier,
} from "../../dist/node.js";

const app = new AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67");
const claims = new PeerClaims("myGroup1", "myPeer1");
const policy = new PeerPolicy("myGroup*", "*");
claims.setAllowPolicy(policy);
const token: string = app.createToken(claims, 3600);
const minted: MintedToken = app.mint(claims, { ttlSeconds: 60, nowUnix: 1735689600, issuedAt: true, tokenId: "x" });
const expiresAt: number = minted.expiresAt;
const allowed: boolean = policy.allows("myGroup1", "peer");
const pattern: string = policy.groupPattern;
const current: PeerPolicy | undefined = claims.allowPolicy;

const pair = KeyPair.generate();
const jwk: Jwk = pair.toJwk();
const kty: "OKP" = jwk.kty;
const keys = new KeySet();
keys.add(pair.apiKey, pair.publicKey);
keys.add("kid_2", PublicKey.fromHex("2794bcd146cb160929f368b8ffafb20f3c9e19bbba42d914b421b10112eefbc8"));
const jwks: Jwks = keys.toJwks();
const verifier = new Verifier(keys, { leewaySeconds: 5, maxTokenLength: 2048 });
const fromJwks = Verifier.fromJwks(jwks);
const verified: VerifiedClaims = fromJwks.verifyAt(token, 1735689601);
const groupId: string = verified.groupId;
const issuedAt: number | undefined = verified.issuedAt;
const json = verified.toJSON();
const gid: string = json.groupId;

try {
  verifier.verify(token);
} catch (e) {
  if (isPulseBeamError(e)) {
    const code: ErrorCode = e.code;
    const message: string = e.message;
    console.log(code, message);
  }
}

// @ts-expect-error ids are strings
new PeerClaims(1, "p");
// @ts-expect-error the ttl is a number
app.createToken(claims, "3600");
// @ts-expect-error createToken takes PeerClaims, not a plain object
app.createToken({ groupId: "g", peerId: "p" }, 60);
// @ts-expect-error ttlSeconds is required
app.mint(claims, { nowUnix: 1 });
// @ts-expect-error unknown option
new Verifier(keys, { leeway: 5 });
// @ts-expect-error the getters are read-only
verified.groupId = "other";
// @ts-expect-error not a code
const bad: ErrorCode = "nope";

export { allowed, bad, current, expiresAt, gid, groupId, issuedAt, kty, pattern };
