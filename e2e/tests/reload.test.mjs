// A page reload and discovery: bob's page reloads (new connection id) and alice, whose session
// with bob's old page just ended, calls bob again at once. As the 0.0.17 client does, she sends
// exactly one Join (a session with bob closed moments ago still counts). That Join leaves before
// bob's new page polls for the first time, so the server must keep it for whichever connection of
// bob's polls next, not hand it to the old page's connection, which will never poll again.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as proto from '../../crates/pulsebeam-dev/assets/proto.js';
import { describe, launchBrowser, openPeer, startDev, waitForState, withPageLogs } from '../lib/harness.mjs';

const RECV = '**/twirp/pulsebeam.v1.Tunnel/Recv';
const HOLD_LIMIT_MS = 5000;
const RECONNECT_LIMIT_MS = 20_000;

const isMethod = (request, method) => request.method() === 'POST' && request.url().endsWith(`/pulsebeam.v1.Tunnel/${method}`);

/** Every Join a page sends to `peerId`: `{ sentAt, answeredAt?, status? }`, in order. */
function watchJoins(page, peerId) {
  const joins = [];
  const byRequest = new Map();
  let onAnswered = () => {};
  const answered = new Promise((resolve) => {
    onAnswered = resolve;
  });
  page.on('request', (request) => {
    if (!isMethod(request, 'Send')) return;
    const body = request.postDataBuffer();
    if (!body) return;
    const msg = proto.decodeSendReq(new Uint8Array(body)).msg;
    if (!msg?.payload?.join || msg.header?.dst?.peerId !== peerId) return;
    const join = { sentAt: Date.now(), dstConnId: msg.header.dst.connId };
    joins.push(join);
    byRequest.set(request, join);
  });
  const finish = async (request, failed) => {
    const join = byRequest.get(request);
    if (!join) return;
    join.answeredAt = Date.now();
    join.status = failed ? 'failed' : ((await request.response().catch(() => null))?.status() ?? 'none');
    onAnswered(join);
  };
  page.on('requestfinished', (request) => finish(request, false));
  page.on('requestfailed', (request) => finish(request, true));
  return { joins, firstAnswered: answered };
}

/** Waits until the page has a connected session with `peerId` at a connection other than `notConnId`. */
async function waitForNewSession(page, peerId, notConnId, timeout) {
  const handle = await page.waitForFunction(
    ([peer, oldConn]) => {
      for (const { session } of window.pulsebeamDemo?.sessions?.values?.() ?? []) {
        if (session.name === peer && session.remote.connId !== oldConn && session.state === 'connected') return session.remote.connId;
      }
      return null;
    },
    [peerId, notConnId],
    { timeout, polling: 50 },
  );
  return handle.jsonValue();
}

test('bob reloads, alice calls him at once with a single Join: they connect again', { timeout: 120_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', camera: '0' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', camera: '0' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    const oldConn = await alice.evaluate(() => [...window.pulsebeamDemo.sessions.values()][0].session.remote.connId);

    // From now on: every Join alice sends to bob, and bob's new page's first Recv is held until
    // alice's Join has been answered (the reload race, made deterministic; a real reload's first
    // Recv comes 50-500 ms after the old page's last one).
    const { joins, firstAnswered } = watchJoins(alice, 'bob');
    let heldMs = null;
    let releasedAt = null;
    let polledConn = null;
    await bob.route(RECV, async (route) => {
      const body = route.request().postDataBuffer();
      const connId = body ? proto.decodeRecvReq(new Uint8Array(body)).src?.connId : undefined;
      if (polledConn === null && connId !== undefined && connId !== oldConn) {
        polledConn = connId;
        const start = Date.now();
        let timer;
        await Promise.race([firstAnswered, new Promise((resolve) => { timer = setTimeout(resolve, HOLD_LIMIT_MS); })]);
        clearTimeout(timer);
        releasedAt = Date.now();
        heldMs = releasedAt - start;
      }
      await route.continue().catch(() => {});
    });

    const reloadAt = Date.now();
    await bob.reload({ waitUntil: 'commit' });

    let newConn;
    try {
      newConn = await waitForNewSession(alice, 'bob', oldConn, RECONNECT_LIMIT_MS);
      await waitForNewSession(bob, 'alice', -1, 5000);
    } catch (err) {
      const sent = joins.map((j) => `+${j.sentAt - reloadAt} ms to conn ${j.dstConnId} -> ${j.status ?? 'unanswered'}`);
      assert.fail(
        `alice and bob's reloaded page did not connect within ${RECONNECT_LIMIT_MS / 1000} s of the reload. ` +
          `alice's Joins to bob after the reload: [${sent.join('; ')}]; bob's first Recv from the new page was held ${heldMs} ms; ` +
          `bob's conn ids: old ${oldConn}, new ${polledConn}. alice ${await describe(alice)}; bob ${await describe(bob)} (${err.message.split('\n')[0]})`,
      );
    }
    const connectedAt = Date.now();
    t.diagnostic(`reload to alice's Join answered: ${joins[0] ? joins[0].answeredAt - reloadAt : '?'} ms; bob's first Recv held ${heldMs} ms`);
    t.diagnostic(`reload to connected again: ${connectedAt - reloadAt} ms`);

    assert.equal(newConn, polledConn, 'alice is connected to the connection bob\'s reloaded page polls with');
    // The case under test: one Join, sent before bob's new page ever polled.
    assert.equal(joins.length, 1, `alice sent exactly one Join to bob after the reload (0.0.17 behaviour): ${JSON.stringify(joins)}`);
    assert.equal(joins[0].dstConnId, 0, 'the Join goes to bob\'s discovery address');
    assert.equal(joins[0].status, 200, `the Join was accepted: ${JSON.stringify(joins[0])}`);
    assert.ok(joins[0].answeredAt <= releasedAt, 'the Join was answered before bob\'s new page first polled');

    await alice.fill('#message', 'welcome back, bob');
    await alice.click('#send');
    await bob.waitForSelector('#messages li[data-from="alice"]', { timeout: 10_000 });
    assert.equal(await bob.locator('#messages li[data-from="alice"]').innerText(), 'alice: welcome back, bob');
  });
});
