// The demo page on gRPC-web `pulsebeam.v1.Signaling` (the protocol of @pulsebeam/peer 0.0.18 to
// 0.1.0-rc.2) against `pulsebeam dev`: two pages connect with video both ways, a Twirp page and a
// gRPC-web page reach each other, a reloaded page is called again, and two nodes on one Redis
// carry a call between them.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  describe,
  launchBrowser,
  metricSamples,
  openPeer,
  startDev,
  startRedis,
  tempDir,
  waitForState,
  withPageLogs,
} from '../lib/harness.mjs';

const SIGNALING = '/grpc/pulsebeam.v1.Signaling/';

/**
 * Every signaling request a page makes, as promises of `{ path, method, authorization,
 * contentType, timeout, xGrpcWeb }` (the headers are read asynchronously), or of `null` for a
 * request whose headers could no longer be read because the page was closing (the page's
 * goodbyes as the test ends).
 */
function watchSignaling(page) {
  const calls = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (request.method() !== 'POST' || !/\/(twirp|grpc)\//.test(url.pathname)) return;
    calls.push(
      request.allHeaders().then(
        (headers) => ({
          path: url.pathname,
          method: url.pathname.split('/').pop(),
          authorization: headers.authorization !== undefined,
          contentType: headers['content-type'],
          timeout: headers['grpc-timeout'],
          xGrpcWeb: headers['x-grpc-web'],
        }),
        (err) => {
          if (page.isClosed() || /has been closed/.test(String(err?.message))) return null;
          throw err;
        },
      ),
    );
  });
  return calls;
}

/** Waits until the remote <video> of `from` shows decoded frames. */
async function waitForVideo(page, from) {
  await page.waitForFunction(
    (peer) => {
      const video = document.querySelector(`#remote-videos video[data-peer="${peer}"]`);
      const track = video?.srcObject?.getVideoTracks?.()[0];
      return Boolean(video && track && track.readyState === 'live' && video.videoWidth > 0);
    },
    from,
    { timeout: 20_000 },
  );
}

async function chat(from, to, fromName, text) {
  await from.fill('#message', text);
  await from.click('#send');
  await to.waitForSelector(`#messages li[data-from="${fromName}"]`, { timeout: 10_000 });
  assert.equal(await to.locator(`#messages li[data-from="${fromName}"]`).last().innerText(), `${fromName}: ${text}`);
}

const transportOf = (page) => page.evaluate(() => window.pulsebeamDemo.tunnel?.transport?.name);

test('two pages on gRPC-web connect, chat and see each other\'s video', { timeout: 120_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  // bob opens the page as a developer would, without choosing: gRPC-web is the default.
  let bobCalls;
  let aliceCalls;
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', transport: null }, { beforeLoad: (page) => { bobCalls = watchSignaling(page); } });
  const started = Date.now();
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', transport: 'grpc-web' }, { beforeLoad: (page) => { aliceCalls = watchSignaling(page); } });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    t.diagnostic(`alice's page load to both connected: ${Date.now() - started} ms`);
    assert.equal(await transportOf(bob), 'grpc-web', 'the page\'s default transport');
    assert.equal(await bob.locator('select[name="transport"]').inputValue(), 'grpc-web', 'the selector shows it');
    assert.equal(await transportOf(alice), 'grpc-web');

    await chat(alice, bob, 'alice', 'hello bob, over gRPC-web');
    await chat(bob, alice, 'bob', 'hi alice');
    await waitForVideo(alice, 'bob');
    await waitForVideo(bob, 'alice');
    assert.match(await alice.locator('#status').innerText(), /connected to bob/, await describe(alice));
    assert.equal(await alice.locator('#error').isVisible(), false, await describe(alice));

    // A quiet stream gets the server's keep-alive Ping (20 s after its last frame), which the
    // page counts and ignores.
    for (const page of [alice, bob]) {
      const deadline = Date.now() + 30_000;
      while ((await page.evaluate(() => window.pulsebeamDemo.tunnel.pings)) < 1) {
        assert.ok(Date.now() < deadline, 'no Ping arrived within 30 s');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  });

  // The pages spoke gRPC-web only, as the clients do: the token on unary calls, none on Recv.
  for (const [name, watched] of [['alice', aliceCalls], ['bob', bobCalls]]) {
    const calls = (await Promise.all(watched)).filter((call) => call !== null);
    assert.ok(calls.length > 0, `${name} made signaling calls`);
    for (const call of calls) {
      assert.ok(call.path.startsWith(SIGNALING), `${name}: ${call.path} is a gRPC-web call`);
      assert.equal(call.contentType, 'application/grpc-web+proto', `${name} ${call.method}`);
      assert.equal(call.xGrpcWeb, '1', `${name} ${call.method}`);
      assert.equal(call.timeout, '900000m', `${name} ${call.method}`);
      assert.equal(call.authorization, call.method !== 'Recv', `${name} ${call.method}: the token on unary calls only`);
    }
    const methods = new Set(calls.map((c) => c.method));
    for (const method of ['Prepare', 'Send', 'Recv']) assert.ok(methods.has(method), `${name} called ${method}`);
  }
  const calls = await metricSamples(dev.url, 'pulsebeam_calls_total');
  assert.ok(calls['protocol="grpc-web",method="Recv",code="ok"'] >= 2, JSON.stringify(calls));
  assert.ok(calls['protocol="grpc-web",method="Send",code="ok"'] > 0, JSON.stringify(calls));
  const twirp = Object.entries(calls).filter(([labels, n]) => labels.includes('"twirp"') && n > 0);
  assert.deepEqual(twirp, [], 'no Twirp call');
});

test('a Twirp page and a gRPC-web page reach each other through the same mailboxes', { timeout: 120_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', camera: '0', transport: 'grpc-web' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', transport: 'twirp' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    assert.equal(await transportOf(alice), 'twirp');
    assert.equal(await transportOf(bob), 'grpc-web');
    await chat(alice, bob, 'alice', 'from Twirp');
    await chat(bob, alice, 'bob', 'from gRPC-web');
    await waitForVideo(bob, 'alice');
  });
  const calls = await metricSamples(dev.url, 'pulsebeam_calls_total');
  for (const protocol of ['twirp', 'grpc-web']) {
    assert.ok(calls[`protocol="${protocol}",method="Send",code="ok"`] > 0, `${protocol} Sends: ${JSON.stringify(calls)}`);
  }
});

test('bob\'s gRPC-web page reloads and alice, who calls him, connects to the new page', { timeout: 120_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', camera: '0', transport: 'grpc-web' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', camera: '0', transport: 'grpc-web' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    const oldConn = await bob.evaluate(() => window.pulsebeamDemo.tunnel.info.connId);
    const reloadAt = Date.now();
    await bob.reload({ waitUntil: 'commit' });
    // alice's session with the old page ends with its Bye; she calls bob again and reaches the
    // reloaded page's new connection.
    const handle = await alice.waitForFunction(
      (old) => {
        for (const { session } of window.pulsebeamDemo.sessions.values()) {
          if (session.name === 'bob' && session.remote.connId !== old && session.state === 'connected') return session.remote.connId;
        }
        return null;
      },
      oldConn,
      { timeout: 20_000, polling: 50 },
    );
    const newConn = await handle.jsonValue();
    t.diagnostic(`reload to connected again: ${Date.now() - reloadAt} ms`);
    await waitForState(bob, 'connected', 10_000);
    assert.equal(newConn, await bob.evaluate(() => window.pulsebeamDemo.tunnel.info.connId), 'alice reached the new page');
    assert.notEqual(newConn, oldConn);
    assert.equal(await transportOf(bob), 'grpc-web');
    await chat(alice, bob, 'alice', 'welcome back, bob');
  });
});

test('alice on one node and bob on another connect over gRPC-web through the shared Redis', { timeout: 150_000 }, async (t) => {
  const redis = await startRedis(t);
  const stateDir = tempDir(t, 'pulsebeam-dev-state-');
  const nodeA = await startDev(t, { storeRedis: redis.url, stateDir });
  const nodeB = await startDev(t, { storeRedis: redis.url, stateDir });
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, nodeB.url, { peerId: 'bob', connect: '', camera: '0', transport: 'grpc-web' });
  const alice = await openPeer(t, browser, nodeA.url, { peerId: 'alice', connect: 'bob', transport: 'grpc-web' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected', 45_000);
    await waitForState(bob, 'connected', 45_000);
    await chat(alice, bob, 'alice', 'hello bob, from node A');
    await chat(bob, alice, 'bob', 'hi alice, from node B');
    await waitForVideo(bob, 'alice');
  });
  // Each page spoke gRPC-web to its own node only: each node opened a stream and took Sends.
  for (const node of [nodeA, nodeB]) {
    const calls = await metricSamples(node.url, 'pulsebeam_calls_total');
    for (const method of ['Prepare', 'Recv', 'Send']) {
      assert.ok(calls[`protocol="grpc-web",method="${method}",code="ok"`] > 0, `${node.url} ${method}: ${JSON.stringify(calls)}`);
    }
  }
});
