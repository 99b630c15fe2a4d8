// The test worker (test/workerd/worker.js) in a real workerd, started by miniflare on loopback,
// for the workerd tests (workerd.test.mjs, memory.test.mjs).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

const root = fileURLToPath(new URL("../../", import.meta.url));
const vectorsText = readFileSync(new URL("../../../../testdata/original-tokens.json", import.meta.url), "utf8");
export const vectors = JSON.parse(vectorsText);
export const { api_key: apiKey, api_secret: apiSecret, public_key_hex: publicKeyHex } = vectors.vectors[0];
const x = Buffer.from(publicKeyHex, "hex").toString("base64url");
export const jwks = { keys: [{ kty: "OKP", crv: "Ed25519", x, kid: apiKey, alg: "EdDSA", use: "sig" }] };

const hostileText = readFileSync(new URL("../hostile-tokens.json", import.meta.url), "utf8");
export const suiteBody = JSON.stringify({ ...vectors, hostile: JSON.parse(hostileText) });

/** A workerd running the test worker, with `compatibilityFlags`. */
export async function startWorker(compatibilityFlags, expectedBackend) {
  const mf = new Miniflare({
    modulesRoot: root,
    modules: [
      { type: "ESModule", path: `${root}test/workerd/worker.js` },
      { type: "ESModule", path: `${root}test/suite.js` },
      { type: "ESModule", path: `${root}dist/workerd.js` },
      { type: "ESModule", path: `${root}dist/api.js` },
      { type: "ESModule", path: `${root}dist/pulsebeam.js` },
      { type: "CompiledWasm", path: `${root}dist/pulsebeam_bg.wasm` },
    ],
    compatibilityDate: "2025-01-01",
    compatibilityFlags,
    bindings: {
      PULSEBEAM_API_KEY: apiKey,
      PULSEBEAM_API_SECRET: apiSecret,
      JWKS: JSON.stringify(jwks),
      EXPECTED_BACKEND: expectedBackend,
    },
    host: "127.0.0.1",
  });
  await mf.ready;
  return mf;
}

