// The `./web` entry point (browsers and bundlers: fetch the wasm next to the module, then
// top-level await) on Deno, whose fetch reads file: URLs.
import * as api from "../../dist/web.js";

const vectors = JSON.parse(await Deno.readTextFile(new URL("../../../../testdata/original-tokens.json", import.meta.url)));

Deno.test("the web entry point mints the golden tokens and verifies the original's", () => {
  const verifier = api.Verifier.fromJwks({ keys: [] });
  for (const v of vectors.vectors) {
    const claims = new api.PeerClaims(v.inputs.group_id, v.inputs.peer_id);
    if (v.inputs.allow_policy) claims.setAllowPolicy(new api.PeerPolicy(v.inputs.allow_policy.group_id, v.inputs.allow_policy.peer_id));
    const { token } = new api.AccessToken(v.api_key, v.api_secret)
      .mint(claims, { ttlSeconds: 3600, nowUnix: v.fixed_clock.now_unix, allowNoPolicy: true });
    if (token !== v.fixed_clock.token) throw new Error(`vector ${v.id}: ${token}`);
    const keys = new api.KeySet();
    keys.add(v.api_key, api.PublicKey.fromHex(v.public_key_hex));
    const claimsBack = new api.Verifier(keys).verify(v.original_wallclock.token);
    if (claimsBack.peerId !== v.inputs.peer_id) throw new Error(`vector ${v.id}: ${claimsBack.peerId}`);
  }
  let code;
  try {
    verifier.verify(vectors.vectors[0].original_wallclock.token);
  } catch (e) {
    code = e.code;
  }
  if (code !== "unknown_key_id") throw new Error(`expected unknown_key_id, got ${code}`);
});
