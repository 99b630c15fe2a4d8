// The `./web` entry point in headless Chromium (Debian's, driven by playwright-core), served
// from a loopback HTTP server: the shared suite runs in the page (playwright gives the browser
// a fresh temporary profile).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = fileURLToPath(new URL("../../", import.meta.url));
const testdata = fileURLToPath(new URL("../../../../testdata/", import.meta.url));
const types = { ".html": "text/html", ".js": "text/javascript", ".json": "application/json", ".wasm": "application/wasm" };
const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
let server;
let browser;

before(async () => {
  server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url, "http://localhost").pathname));
    const file = path.startsWith("/testdata/") ? join(testdata, path.slice("/testdata/".length))
      : /^\/(dist|test)\//.test(path) ? join(root, path) : null;
    try {
      if (!file || path.includes("..")) throw new Error("not served");
      const body = readFileSync(file);
      response.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test("the shared suite passes in Chromium through the web entry point", async (t) => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${server.address().port}/test/browser/index.html`);
  await page.waitForFunction(() => window.results !== undefined, null, { timeout: 60_000 });
  const results = await page.evaluate(() => window.results);
  assert.deepEqual(errors, []);
  assert.ok(results.length >= 20, `only ${results.length} cases ran: ${JSON.stringify(results)}`);
  for (const result of results) {
    await t.test(result.name, () => assert.ok(result.ok, result.error));
  }
});
