// A token whose allow policy excludes the other peer cannot reach it, and the page says why, on
// either signaling protocol (Twirp's permission_denied, gRPC-web's PERMISSION_DENIED).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describe, launchBrowser, openPeer, startDev, withPageLogs } from '../lib/harness.mjs';

for (const transport of ['twirp', 'grpc-web']) {
  test(`${transport}: a peer whose policy excludes the other cannot connect, and the page explains it`, { timeout: 90_000 }, async (t) => {
    const dev = await startDev(t);
    const browser = await launchBrowser(t);
    const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', camera: '0', transport });
    // alice may only reach carol.
    const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', allow: 'default:carol', camera: '0', transport });

    await withPageLogs(t, async () => {
      await alice.waitForSelector('#status[data-state="failed"]', { timeout: 30_000 });
      const error = await alice.locator('#error').innerText();
      assert.equal(error, "not allowed to reach bob: the token's policy (default:carol) excludes default:bob");
      assert.equal(await bob.locator('#peers li').count(), 0, await describe(bob));
      assert.equal(await bob.locator('#status').getAttribute('data-state'), 'online', await describe(bob));
    });
  });
}

test('an id the token rules refuse is explained on the page', { timeout: 60_000 }, async (t) => {
  const dev = await startDev(t);
  const browser = await launchBrowser(t);
  const page = await openPeer(t, browser, dev.url, { peerId: 'a-peer-id-too-long', connect: 'bob', camera: '0' });

  await withPageLogs(t, async () => {
    await page.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    assert.equal(
      await page.locator('#error').innerText(),
      'could not get a token: bad groupId or peerId: peer id is 18 characters long; shorten it to at most 16',
    );
    assert.equal(await page.locator('#status').getAttribute('data-state'), 'failed');
    // The form is usable again to fix the id.
    assert.equal(await page.locator('#start').isEnabled(), true);
  });
});
