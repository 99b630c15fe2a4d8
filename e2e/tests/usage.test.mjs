// The usage page on the admin listener: `pulsebeam serve` with `[admin]`, a little signaling
// traffic through the Twirp API, then headless Chromium opens /admin/usage, is refused with a
// wrong admin token, and with the right one shows the project's charts with the same numbers as
// the admin API's JSON. A screenshot of the page is kept in target/e2e/usage-page.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort, launchBrowser, pulsebeamBin, startServe, tempDir } from '../lib/harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const SENDS = 7;

function keygen() {
  return JSON.parse(execFileSync(pulsebeamBin(), ['keygen', '--json'], { encoding: 'utf8' }));
}

function createToken(keys, peerId) {
  return execFileSync(
    pulsebeamBin(),
    ['create-token', '--api-key', keys.api_key, '--group-id', 'room', '--peer-id', peerId, '--allow-policy', 'room:*', '--duration', '10m'],
    { encoding: 'utf8', env: { ...process.env, PULSEBEAM_API_SECRET: keys.api_secret } },
  ).trim();
}

/** A Twirp call with a JSON body; resolves to the parsed answer, or throws with the Twirp error. */
async function twirp(base, method, token, body, signal) {
  const response = await fetch(`${base}/twirp/pulsebeam.v1.Tunnel/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal,
  });
  const text = await response.text();
  assert.equal(response.status, 200, `${method} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : {};
}

async function admin(base, route, token) {
  const response = await fetch(`${base}${route}`, { headers: { authorization: `Bearer ${token}` } });
  const body = await response.json();
  assert.equal(response.status, 200, `${route} answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

const peer = (peerId, connId) => ({ groupId: 'room', peerId, connId });

test('the usage page shows a project\'s traffic as the admin API counts it', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t, 'pulsebeam-usage-');
  const [port, adminPort] = [await freePort(), await freePort()];
  const main = keygen();
  const quiet = keygen();
  const adminToken = randomBytes(24).toString('hex');
  const config = path.join(dir, 'pulsebeam.toml');
  writeFileSync(
    config,
    `listen = "127.0.0.1:${port}"

[limits]
poll_timeout_ms = 60000

[[projects]]
id = "main"
[[projects.keys]]
kid = "${main.api_key}"
public_key = "${main.public_key}"

[[projects]]
id = "quiet"
[[projects.keys]]
kid = "${quiet.api_key}"
public_key = "${quiet.public_key}"

[[ice.turn]]
urls = ["turn:127.0.0.1:3478?transport=udp"]
secret = "${randomBytes(16).toString('hex')}"

[admin]
listen = "127.0.0.1:${adminPort}"
token_sha256 = "${createHash('sha256').update(adminToken).digest('hex')}"
`,
  );
  await startServe(t, config, [port, adminPort]);
  const base = `http://127.0.0.1:${port}`;
  const adminBase = `http://127.0.0.1:${adminPort}`;

  // Traffic in project main: alice sends bob SENDS offers, bob collects them, alice asks for
  // ICE servers (one TURN credential), and bob keeps a Recv open (one connection online).
  const alice = createToken(main, 'alice');
  const bob = createToken(main, 'bob');
  const bobConn = 4242;
  for (let seq = 0; seq < SENDS; seq += 1) {
    await twirp(base, 'Send', alice, {
      msg: {
        header: { src: peer('alice', 1717), dst: peer('bob', bobConn), seqnum: seq, reliable: true },
        payload: { signal: { generationCounter: 0, sdp: { kind: 'SDP_KIND_OFFER', sdp: `v=0\r\no=- ${seq} 2 IN IP4 127.0.0.1\r\n` } } },
      },
    });
  }
  const got = await twirp(base, 'Recv', bob, { src: peer('bob', bobConn) });
  assert.equal(got.msgs?.length, SENDS, `bob received every message: ${JSON.stringify(got)}`);
  const prepared = await twirp(base, 'Prepare', alice, {});
  assert.ok(prepared.iceServers?.some((s) => s.credential), `Prepare gave a TURN credential: ${JSON.stringify(prepared)}`);
  const stopPolling = new AbortController();
  t.after(() => stopPolling.abort());
  const openPoll = twirp(base, 'Recv', bob, { src: peer('bob', bobConn) }, stopPolling.signal).catch(() => {});

  // The admin API's view, once bob's open Recv is counted.
  let minutes;
  for (let i = 0; i < 100; i += 1) {
    minutes = await admin(adminBase, '/admin/v1/usage/minutes?project=main&minutes=60', adminToken);
    if (minutes.online_now === 1) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const sum = (field) => minutes.minutes.reduce((total, m) => total + m[field], 0);
  assert.equal(minutes.online_now, 1, `bob's open Recv is online: ${JSON.stringify(minutes)}`);
  assert.equal(minutes.minutes.length, 60);
  assert.equal(sum('messages'), SENDS);
  assert.equal(sum('turn_credentials'), 1);
  assert.ok(sum('message_bytes') > 0);
  const expected = {
    online: minutes.online_now,
    messages: sum('messages'),
    turn: sum('turn_relay_bytes'),
    peak: Math.max(...minutes.minutes.map((m) => m.online)),
  };
  const projects = await admin(adminBase, '/admin/v1/projects', adminToken);
  assert.deepEqual(projects.projects, ['main', 'quiet']);

  const browser = await launchBrowser(t);
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const requests = [];
  page.on('request', (request) => requests.push(request.url()));
  const logs = [];
  page.on('console', (msg) => logs.push(`[console] ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[pageerror] ${err.message}`));
  try {
    await page.goto(`${adminBase}/admin/usage`);
    await page.waitForSelector('#status[data-state="need-token"]', { timeout: 10_000 });
    assert.match(await page.locator('#status').innerText(), /enter the admin token/i);
    assert.equal(await page.locator('#projects section').count(), 0, 'no data is shown without a token');

    // A wrong token: the plain-words error, no data, and nothing kept.
    await page.getByLabel('Admin token').fill('not-the-admin-token');
    await page.getByRole('button', { name: 'Show usage' }).click();
    await page.waitForSelector('#status[data-state="wrong-token"]', { timeout: 10_000 });
    assert.match(await page.locator('#status').innerText(), /wrong admin token/i);
    assert.equal(await page.locator('#projects section').count(), 0);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');

    // The right token: both projects, main's charts with data.
    await page.getByLabel('Admin token').fill(adminToken);
    await page.getByRole('button', { name: 'Show usage' }).click();
    await page.waitForSelector('#status[data-state="ok"]', { timeout: 15_000 });
    const card = (project, chart) => page.locator(`section[data-project="${project}"] [data-chart="${chart}"]`);
    await page.waitForFunction(
      () => Number(document.querySelector('section[data-project="main"] [data-chart="messages"] .value')?.dataset.raw) > 0,
      null,
      { timeout: 15_000 },
    );
    const raw = async (project, chart) => Number(await card(project, chart).locator('.value').getAttribute('data-raw'));
    const shown = { online: await raw('main', 'online'), messages: await raw('main', 'messages'), turn: await raw('main', 'turn') };
    t.diagnostic(`page shows for main: ${JSON.stringify(shown)}; admin API: ${JSON.stringify(expected)}`);
    assert.equal(shown.online, expected.online, 'connections online now, as /admin/v1/usage/minutes says');
    assert.equal(shown.messages, expected.messages, 'messages in the last hour, as /admin/v1/usage/minutes says');
    assert.equal(shown.turn, expected.turn, 'TURN relay bytes in the last hour, as /admin/v1/usage/minutes says');
    assert.equal(await card('main', 'online').locator('.value').innerText(), String(expected.online));
    assert.equal(await card('main', 'messages').locator('.value').innerText(), String(expected.messages));
    assert.match(await card('main', 'turn').locator('.detail').innerText(), /1 TURN credential issued/);
    assert.equal(await page.locator('section[data-project="main"]').getAttribute('data-empty'), 'false');

    // Each chart is an image with a description that carries its numbers, and one bar (or
    // column) per minute.
    const messagesChart = card('main', 'messages').locator('svg[role="img"]');
    assert.match(await messagesChart.getAttribute('aria-label'), new RegExp(`${expected.messages} in total`));
    assert.equal(await messagesChart.locator('rect').count(), 60);
    assert.ok((await messagesChart.locator('rect.bar').evaluateAll((bars) => bars.filter((b) => Number(b.getAttribute('height')) > 0).length)) >= 1);
    assert.match(await card('main', 'online').locator('svg').getAttribute('aria-label'), new RegExp(`${expected.online} now, at most ${expected.peak} at once`));

    // The project without traffic says so.
    assert.equal(await page.locator('section[data-project="quiet"]').getAttribute('data-empty'), 'true');
    assert.equal(await page.locator('section[data-project="quiet"] .badge').innerText(), 'No traffic yet');

    // The token lives in this tab's sessionStorage only, and the page fetched nothing from
    // anywhere but the admin listener.
    assert.deepEqual(await page.evaluate(() => Object.values(sessionStorage)), [adminToken]);
    assert.ok(!page.url().includes(adminToken), 'the token is not in the address');
    const foreign = requests.filter((url) => !url.startsWith(`${adminBase}/`));
    assert.deepEqual(foreign, [], 'the page loads nothing from other origins');
    const dataCalls = requests.filter((url) => url.includes('/admin/v1/'));
    assert.ok(dataCalls.length >= 2, `the page asked the admin API: ${dataCalls}`);
    assert.deepEqual(
      [...new Set(dataCalls)],
      [`${adminBase}/admin/v1/usage/minutes?minutes=60`],
      'one call per refresh, every project in it',
    );

    const shot = path.join(dir, 'usage-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    const kept = path.join(process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, 'target'), 'e2e', 'usage-page.png');
    mkdirSync(path.dirname(kept), { recursive: true });
    copyFileSync(shot, kept);
    t.diagnostic(`screenshot: ${kept}`);
  } catch (err) {
    console.error(`--- usage page log ---\n${logs.join('\n')}`);
    throw err;
  }
  stopPolling.abort();
  await openPoll;
});
