// Two headless Chromium pages connect through `pulsebeam dev`, chat, and receive each other's
// (fake) camera video.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describe, launchBrowser, openPeer, startDev, waitForState, withPageLogs } from '../lib/harness.mjs';

test('two pages connect, chat both ways and see each other\'s video', { timeout: 120_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '' });
  const started = Date.now();
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    // Reported, never asserted: the machines are shared and noisy.
    t.diagnostic(`alice's page load to both connected: ${Date.now() - started} ms`);

    const typed = Date.now();
    await alice.fill('#message', 'hello bob, from alice');
    await alice.click('#send');
    await bob.waitForSelector('#messages li[data-from="alice"]', { timeout: 10_000 });
    t.diagnostic(`chat message typed to shown on the other page: ${Date.now() - typed} ms`);
    assert.equal(await bob.locator('#messages li[data-from="alice"]').innerText(), 'alice: hello bob, from alice');

    await bob.fill('#message', 'hi alice');
    await bob.press('#message', 'Enter');
    await alice.waitForSelector('#messages li[data-from="bob"]', { timeout: 10_000 });
    assert.equal(await alice.locator('#messages li[data-from="bob"]').innerText(), 'bob: hi alice');

    // A decoded frame of the other side's fake camera: the remote <video> has a size.
    for (const [page, from] of [[alice, 'bob'], [bob, 'alice']]) {
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
    assert.match(await alice.locator('#status').innerText(), /connected to bob/, await describe(alice));
    assert.match(await bob.locator('#status').innerText(), /connected to alice/, await describe(bob));
    assert.equal(await alice.locator('#error').isVisible(), false, await describe(alice));
  });
});

test('a peer that leaves is reported as gone to the other', { timeout: 90_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', camera: '0' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', camera: '0' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected');
    await waitForState(bob, 'connected');
    // Closing alice's page sends Bye; bob's page says she left.
    await alice.close({ runBeforeUnload: true });
    await bob.waitForSelector('#peers li[data-peer="alice"][data-state="closed"], #peers li[data-peer="alice"][data-state="disconnected"]', { timeout: 30_000 });
    assert.match(await bob.locator('#peers li[data-peer="alice"]').innerText(), /alice/);
  });
});
