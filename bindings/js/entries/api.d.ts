export {
  AccessToken,
  KeyPair,
  KeySet,
  PeerClaims,
  PeerPolicy,
  PublicKey,
  VerifiedClaims,
  Verifier,
} from "./pulsebeam.js";
export type {
  ErrorCode,
  Jwk,
  Jwks,
  MintedToken,
  MintOptions,
  PulseBeamError,
  VerifiedClaimsJSON,
  VerifierOptions,
} from "./pulsebeam.js";
import type { PulseBeamError } from "./pulsebeam.js";

/** Whether `value` is an error thrown by this package (a `PulseBeamError` with a `code`). */
export declare function isPulseBeamError(value: unknown): value is PulseBeamError;
