// Two `pulsebeam dev` nodes on one Redis (`--store-redis`) and one state directory (one dev key):
// alice's page talks to node A only, bob's to node B only, and they still find each other, chat
// and connect.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describe, launchBrowser, openPeer, startDev, startRedis, tempDir, waitForState, withPageLogs } from '../lib/harness.mjs';

test('alice on one node and bob on another connect and chat through the shared Redis', { timeout: 150_000 }, async (t) => {
  const redis = await startRedis(t);
  const stateDir = tempDir(t, 'pulsebeam-dev-state-');
  const nodeA = await startDev(t, { storeRedis: redis.url, stateDir });
  const nodeB = await startDev(t, { storeRedis: redis.url, stateDir });
  assert.notEqual(nodeA.url, nodeB.url);
  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, nodeB.url, { peerId: 'bob', connect: '', camera: '0' });
  const alice = await openPeer(t, browser, nodeA.url, { peerId: 'alice', connect: 'bob', camera: '0' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected', 45_000);
    await waitForState(bob, 'connected', 45_000);

    await alice.fill('#message', 'hello bob, from node A');
    await alice.click('#send');
    await bob.waitForSelector('#messages li[data-from="alice"]', { timeout: 10_000 });
    assert.equal(await bob.locator('#messages li[data-from="alice"]').innerText(), 'alice: hello bob, from node A');

    await bob.fill('#message', 'hi alice, from node B');
    await bob.press('#message', 'Enter');
    await alice.waitForSelector('#messages li[data-from="bob"]', { timeout: 10_000 });
    assert.equal(await alice.locator('#messages li[data-from="bob"]').innerText(), 'bob: hi alice, from node B');
    assert.match(await alice.locator('#status').innerText(), /connected to bob/, await describe(alice));
    assert.match(await bob.locator('#status').innerText(), /connected to alice/, await describe(bob));
  });

  // Each page spoke to its own node only: each node served Twirp calls.
  for (const node of [nodeA, nodeB]) {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    const calls = text
      .split('\n')
      .filter((l) => l.startsWith('pulsebeam_project_calls_total{project="dev"}'))
      .map((l) => Number(l.split(' ').pop()));
    assert.ok(calls[0] > 0, `${node.url} served no call for the dev project:\n${text}`);
  }
});
