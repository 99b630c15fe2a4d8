// The public API, shared by every entry point. Each entry point initialises the WebAssembly
// module its own way (file read, fetch, or an imported module) before re-exporting this.
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

/**
 * Whether `value` is an error thrown by this package (a `PulseBeamError` with a `code`).
 * @param {unknown} value
 * @returns {boolean}
 */
export function isPulseBeamError(value) {
  return value instanceof Error && value.name === "PulseBeamError" &&
    typeof /** @type {{ code?: unknown }} */ (value).code === "string";
}
