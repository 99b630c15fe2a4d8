// Relay-only ICE through a real coturn on loopback: the TURN credentials from Prepare work with
// the right static-auth-secret and are refused with a wrong one.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describe, launchBrowser, openPeer, startCoturn, startDev, waitForState, withPageLogs } from '../lib/harness.mjs';

const SECRET = 'e2e-turn-secret-0123456789abcdef';

async function selectedPairTypes(page) {
  return page.evaluate(async () => {
    const [entry] = [...window.pulsebeamDemo.sessions.values()];
    const stats = await entry.session.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair) return null;
    return { local: stats.get(pair.localCandidateId)?.candidateType, remote: stats.get(pair.remoteCandidateId)?.candidateType };
  });
}

test('relay-only peers connect through coturn with the server\'s TURN credentials', { timeout: 120_000 }, async (t) => {
  const turn = await startCoturn(t, { secret: SECRET });
  const dev = await startDev(t, { turn: { url: turn.url, secret: SECRET } });
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', relay: '1', camera: '0' });
  const started = Date.now();
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', relay: '1', camera: '0' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected', 45_000);
    await waitForState(bob, 'connected', 45_000);
    t.diagnostic(`alice's page load to both connected through the relay: ${Date.now() - started} ms`);
    assert.deepEqual(await selectedPairTypes(alice), { local: 'relay', remote: 'relay' });

    await alice.fill('#message', 'via the relay');
    await alice.click('#send');
    await bob.waitForSelector('#messages li[data-from="alice"]', { timeout: 10_000 });
    assert.equal(await bob.locator('#messages li[data-from="alice"]').innerText(), 'alice: via the relay');
  });
});

test('with a wrong TURN secret, relay-only peers cannot connect and the page says why', { timeout: 120_000 }, async (t) => {
  const turn = await startCoturn(t, { secret: SECRET });
  const dev = await startDev(t, { turn: { url: turn.url, secret: 'not-the-coturn-secret' } });
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', relay: '1', camera: '0' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', relay: '1', camera: '0' });

  await withPageLogs(t, async () => {
    // The signaling works (both sides find each other), but no relay address is granted.
    await alice.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    const error = await alice.locator('#error').innerText();
    assert.match(error, /TURN server turn:127\.0\.0\.1:\d+.* refused our credentials \(401/, error);
    assert.match(error, /cannot connect to bob/, error);
    for (const page of [alice, bob]) {
      assert.notEqual(await page.locator('#status').getAttribute('data-state'), 'connected', await describe(page));
      assert.equal(await page.locator('#peers li[data-state="connected"]').count(), 0, await describe(page));
    }
  });
});
