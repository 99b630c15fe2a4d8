// One cold start: import the package and mint the first token, in this fresh process; prints the
// milliseconds it took. `node bench/cold.mjs [default|wasm|node:crypto]` (also bun, deno).
const isDeno = typeof Deno !== "undefined";
const choice = (isDeno ? Deno.args : process.argv.slice(2))[0] ?? "default";
const start = performance.now();
const api = isDeno ? await import("../dist/deno.js") : await import("@pulsebeam/server");
const options = choice === "default" ? undefined : { backend: choice };
const app = new api.AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67", options);
const claims = new api.PeerClaims("myGroup1", "myPeer1");
claims.setAllowPolicy(new api.PeerPolicy("myGroup*", "*"));
app.createToken(claims, 3600);
console.log((performance.now() - start).toFixed(2));
