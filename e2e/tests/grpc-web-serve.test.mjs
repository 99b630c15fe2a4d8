// The demo page on gRPC-web against `pulsebeam serve`: over TLS, where Chromium speaks HTTP/2 to
// the server, and with the admin API, whose revocation ends a peer's Recv stream. `serve` has no
// page of its own, so the page is served from another local origin (`startPageServer`) and calls
// the server cross-origin (`server=`), which also shows that the server's CORS lets a page read
// the gRPC status of its calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import {
  describe,
  freePort,
  keygen,
  launchBrowser,
  openPeer,
  selfSignedCert,
  startPageServer,
  startServe,
  tempDir,
  waitForState,
  withPageLogs,
} from '../lib/harness.mjs';

/** Writes a `pulsebeam serve` config for project `main` with `keys`, plus `extra` TOML. */
function writeConfig(t, port, keys, extra = '') {
  const file = path.join(tempDir(t, 'pulsebeam-serve-'), 'pulsebeam.toml');
  writeFileSync(
    file,
    `listen = "127.0.0.1:${port}"

[[projects]]
id = "main"
[[projects.keys]]
kid = "${keys.api_key}"
public_key = "${keys.public_key}"
${extra}`,
  );
  return file;
}

async function chat(from, to, fromName, text) {
  await from.fill('#message', text);
  await from.click('#send');
  await to.waitForSelector(`#messages li[data-from="${fromName}"]`, { timeout: 10_000 });
  assert.equal(await to.locator(`#messages li[data-from="${fromName}"]`).last().innerText(), `${fromName}: ${text}`);
}

/**
 * The protocol (`h2`, `http/1.1`) and HTTP status of every signaling answer a page received,
 * CORS preflights included, from the DevTools protocol.
 */
async function watchProtocols(page) {
  const seen = [];
  const cdp = await page.context().newCDPSession(page);
  cdp.on('Network.responseReceived', ({ response, type }) => {
    if (response.url.includes('/pulsebeam.v1.Signaling/')) {
      seen.push({ method: response.url.split('/').pop(), preflight: type === 'Preflight', protocol: response.protocol, status: response.status });
    }
  });
  await cdp.send('Network.enable');
  return seen;
}

test('over TLS, two gRPC-web pages connect through HTTP/2, one with the token in the base URL', { timeout: 120_000 }, async (t) => {
  const keys = keygen();
  const { cert, key } = selfSignedCert(t);
  const port = await freePort();
  const config = writeConfig(t, port, keys, `
[tls]
cert_file = "${cert}"
key_file = "${key}"
`);
  await startServe(t, config, [port]);
  const server = `https://127.0.0.1:${port}`;
  const pages = await startPageServer(t, keys);
  // The certificate is a throwaway one that Chromium cannot trust.
  const browser = await launchBrowser(t, { args: ['--ignore-certificate-errors'] });
  const protocols = {};
  const watch = (name) => ({ beforeLoad: (page) => { protocols[name] = watchProtocols(page); } });
  const query = { connect: '', camera: '0', transport: 'grpc-web', server };
  // bob's Recv stream carries his token in its path; alice's is admitted by her Prepare.
  const bob = await openPeer(t, browser, pages, { ...query, peerId: 'bob', tokenInPath: '1' }, watch('bob'));
  const alice = await openPeer(t, browser, pages, { ...query, peerId: 'alice', connect: 'bob', camera: '1' }, watch('alice'));

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    await chat(alice, bob, 'alice', 'hello over h2');
    await chat(bob, alice, 'bob', 'hi alice');
    await bob.waitForFunction(() => document.querySelector('#remote-videos video[data-peer="alice"]')?.videoWidth > 0, null, { timeout: 20_000 });

    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      // Chromium's network stack says which protocol each answer came over, streams included.
      // (The page's own Resource Timing leaves `nextHopProtocol` empty here: the calls are
      // cross-origin and the server sends no Timing-Allow-Origin.)
      const seen = await protocols[name];
      for (const method of ['Prepare', 'Send', 'Recv']) {
        assert.ok(seen.some((e) => e.method === method), `${name} ${method}: ${JSON.stringify(seen)}`);
      }
      for (const entry of seen) {
        assert.equal(entry.protocol, 'h2', `${name} ${entry.method}: ${JSON.stringify(seen)}`);
        // A cross-origin call is preceded by its preflight (204), then answered 200.
        assert.equal(entry.status, entry.preflight ? 204 : 200, `${name} ${entry.method}: ${JSON.stringify(seen)}`);
      }
    }
    const bobRecv = await bob.evaluate(() => window.pulsebeamDemo.tunnel.transport.baseUrl);
    assert.match(bobRecv, /^https:\/\/127\.0\.0\.1:\d+\/grpc\/t\/ey[\w-]+\.[\w-]+\.[\w-]+$/, 'bob\'s base URL holds his token');
    assert.equal(await bob.locator('#error').isVisible(), false, await describe(bob));
  });
});

test('a revoked peer\'s Recv stream ends with UNAUTHENTICATED and its page says so', { timeout: 120_000 }, async (t) => {
  const keys = keygen();
  const [port, adminPort] = [await freePort(), await freePort()];
  const adminToken = randomBytes(24).toString('hex');
  const config = writeConfig(t, port, keys, `
[admin]
listen = "127.0.0.1:${adminPort}"
token_sha256 = "${createHash('sha256').update(adminToken).digest('hex')}"
`);
  await startServe(t, config, [port, adminPort]);
  const server = `http://127.0.0.1:${port}`;
  const pages = await startPageServer(t, keys);
  const browser = await launchBrowser(t);
  const query = { camera: '0', transport: 'grpc-web', server };
  const bob = await openPeer(t, browser, pages, { ...query, peerId: 'bob', connect: '' });
  const alice = await openPeer(t, browser, pages, { ...query, peerId: 'alice', connect: 'bob' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    const revokedAt = Date.now();
    const response = await fetch(`http://127.0.0.1:${adminPort}/admin/v1/revocations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ project: 'main', group: 'default', peer: 'bob', for_secs: 600 }),
    });
    assert.equal(response.status, 200, await response.text());

    await bob.waitForSelector('#status[data-state="failed"]', { timeout: 10_000 });
    t.diagnostic(`revocation to bob's page saying so: ${Date.now() - revokedAt} ms`);
    assert.match(
      await bob.locator('#error').innerText(),
      /^the server did not accept the token \(the token is revoked \(every token of peer "bob" in group "default" of project "main"\) until \d+; .*\); reload the page to get a fresh one$/,
    );
    // It was the open stream that ended (its trailer frame, read cross-origin), not a later call.
    const closed = await bob.evaluate(() => window.pulsebeamDemo.closed);
    assert.deepEqual({ ...closed, msg: closed.msg.slice(0, 20) }, {
      code: 'unauthenticated',
      msg: 'the token is revoked',
      method: 'Recv',
      grpcStatus: 16,
    });
    // alice is not revoked: her page is still signaling.
    assert.equal(await alice.evaluate(() => window.pulsebeamDemo.tunnel.closed), false, await describe(alice));
  });
});
