// A Cloudflare worker using the package through its `./workerd` entry point (the wasm module
// is imported, as wrangler does), serving what a real token endpoint serves:
//   GET  /token?groupId=…&peerId=…  mints a token with the credentials in env
//   POST /verify   (body: token)     verifies it against env.JWKS
//   GET  /jwks                       the public keys
//   POST /suite    (body: vectors)   runs the shared suite inside workerd, expecting the default
//                                    backend env.EXPECTED_BACKEND
//   POST /churn    (body: {iterations, token}) mints and verifies in a loop as the original API is
//                                    used (no free()), for the memory test
import { AccessToken, PeerClaims, PeerPolicy, Verifier, isPulseBeamError } from "../../dist/workerd.js";
import * as api from "../../dist/workerd.js";
import { runAll } from "../suite.js";

function json(body, status = 200) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function fail(e) {
  if (isPulseBeamError(e)) return json({ code: e.code, message: e.message }, 400);
  throw e;
}

let churnState;

/** `iterations` rounds of: claims and a policy made anew, a token minted, then verified. */
function churn(env, iterations) {
  churnState ??= {
    app: new AccessToken(env.PULSEBEAM_API_KEY, env.PULSEBEAM_API_SECRET),
    verifier: Verifier.fromJwks(env.JWKS),
  };
  const { app, verifier } = churnState;
  let checked = 0;
  for (let i = 0; i < iterations; i++) {
    const claims = new PeerClaims("myGroup1", `peer${i % 1000}`);
    claims.setAllowPolicy(new PeerPolicy("myGroup*", "*"));
    const token = app.createToken(claims, 3600);
    if (verifier.verify(token).peerId === claims.peerId) checked++;
  }
  return { checked, backend: app.backend };
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      if (url.pathname === "/token") {
        const app = new AccessToken(env.PULSEBEAM_API_KEY, env.PULSEBEAM_API_SECRET);
        const claims = new PeerClaims(url.searchParams.get("groupId") ?? "", url.searchParams.get("peerId") ?? "");
        claims.setAllowPolicy(new PeerPolicy("*", "*"));
        return json({ token: app.createToken(claims, 3600) });
      }
      if (url.pathname === "/verify" && request.method === "POST") {
        const claims = Verifier.fromJwks(env.JWKS).verify(await request.text());
        return json(claims.toJSON());
      }
      if (url.pathname === "/jwks") {
        return json(Verifier.fromJwks(env.JWKS).toJwks());
      }
      if (url.pathname === "/suite" && request.method === "POST") {
        return json(runAll(api, await request.json(), env.EXPECTED_BACKEND));
      }
      if (url.pathname === "/churn" && request.method === "POST") {
        const { iterations } = await request.json();
        return json(churn(env, iterations));
      }
      return json({ error: "not found" }, 404);
    } catch (e) {
      return fail(e);
    }
  },
};
