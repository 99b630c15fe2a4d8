// Mints and verifies in a loop as the original API is used (claims and a policy made anew for
// every token, no free()), with the event loop turning between chunks, and prints the resident
// set size before and after as JSON. Runs on Node, Bun and Deno:
//
//   node test/memory/churn.mjs ITERATIONS [BACKEND]     (each iteration: one mint, one verify)
const isDeno = typeof Deno !== "undefined";
const api = isDeno ? await import("../../dist/deno.js") : await import("@pulsebeam/server");
const args = isDeno ? Deno.args : process.argv.slice(2);
const iterations = Number(args[0] ?? 100_000);
const backend = args[1] ?? api.backend;
const rss = () => (isDeno ? Deno.memoryUsage() : process.memoryUsage()).rss;
const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

const app = new api.AccessToken("kid_73d8caa6c387d46c", "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67", { backend });
const keys = new api.KeySet();
keys.add(app.apiKey, app.publicKey);
const verifier = new api.Verifier(keys, { backend });

let checked = 0;
async function run(count) {
  for (let done = 0; done < count;) {
    const chunk = Math.min(10_000, count - done);
    for (let i = 0; i < chunk; i++) {
      const claims = new api.PeerClaims("myGroup1", `peer${i % 1000}`);
      claims.setAllowPolicy(new api.PeerPolicy("myGroup*", "*"));
      const token = app.createToken(claims, 3600);
      if (verifier.verify(token).peerId === claims.peerId) checked++;
    }
    done += chunk;
    await turn();
  }
}

// A first chunk settles the JIT and the heap; the baseline is read after it.
const warmup = Math.min(20_000, Math.floor(iterations / 5));
await run(warmup);
const before = rss();
const start = performance.now();
await run(iterations - warmup);
const seconds = (performance.now() - start) / 1000;
const after = rss();
console.log(JSON.stringify({ iterations, checked, backend: app.backend, before, after, seconds }));
