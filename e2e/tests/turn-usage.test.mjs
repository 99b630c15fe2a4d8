// TURN relay bytes per project: coturn publishes its per-allocation traffic to Redis
// (redis-statsdb), `pulsebeam dev --turn-stats-redis` counts it for the project the TURN username
// names, and the count on /metrics matches what coturn itself reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  launchBrowser,
  openPeer,
  psubscribe,
  startCoturn,
  startDev,
  startRedis,
  waitForState,
  withPageLogs,
} from '../lib/harness.mjs';

const SECRET = 'e2e-turn-secret-0123456789abcdef';
const PROJECT = 'dev';
const CHANNEL = /^turn\/realm\/[^/]+\/user\/(.+)\/allocation\/(\d+)\/(status|traffic|total_traffic)$/;

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

async function waitFor(what, timeoutMs, check) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What coturn said about the project's allocations: `{ allocations, deleted, total }`. */
function coturnReports(messages) {
  const allocations = new Set();
  const deleted = new Set();
  let total = 0;
  let deltas = 0;
  for (const { channel, message } of messages) {
    const m = channel.match(CHANNEL);
    if (!m) continue;
    const [, username, id, event] = m;
    const project = decodeURIComponent(username.slice(username.indexOf(':') + 1).split('/')[0]);
    if (project !== PROJECT) continue;
    allocations.add(id);
    if (event === 'status' && message === 'deleted') deleted.add(id);
    const fields = Object.fromEntries(message.split(',').map((f) => f.trim().split('=')));
    const bytes = Number(fields.rcvb) + Number(fields.sentb);
    if (event === 'total_traffic') total += bytes;
    if (event === 'traffic') deltas += bytes;
  }
  return { allocations, deleted, total, deltas };
}

test('TURN relay bytes of a relay-only call are counted for the project, as coturn reports them', { timeout: 180_000 }, async (t) => {
  const redis = await startRedis(t);
  const { messages } = await psubscribe(t, redis.port, 'turn/*');
  // Chromium does not always release every allocation when a page closes; with a 15 s lifetime
  // what it leaves expires, and coturn reports it, well within the wait below.
  const turn = await startCoturn(t, { secret: SECRET, redisStatsPort: redis.port, maxAllocateLifetime: 15 });
  const dev = await startDev(t, { turn: { url: turn.url, secret: SECRET }, turnStatsRedis: redis.url });
  const relayed = `pulsebeam_project_turn_relay_bytes_total{project="${PROJECT}"}`;
  // Reports published before the server subscribes are not counted: wait until it does.
  await waitFor('pulsebeam dev counts coturn reports (pulsebeam_turn_stats_leader 1)', 20_000, async () =>
    (await metric(dev.url, 'pulsebeam_turn_stats_leader')) === 1,
  );
  assert.equal(await metric(dev.url, relayed), 0);

  const browser = await launchBrowser(t);
  const bob = await openPeer(t, browser, dev.url, { peerId: 'bob', connect: '', relay: '1' });
  const alice = await openPeer(t, browser, dev.url, { peerId: 'alice', connect: 'bob', relay: '1' });

  await withPageLogs(t, async () => {
    await waitForState(alice, 'connected', 45_000);
    await waitForState(bob, 'connected', 45_000);
    // A few seconds of fake camera video both ways, through coturn.
    await new Promise((r) => setTimeout(r, 6_000));
    for (const page of [alice, bob]) {
      await page.evaluate(() => {
        for (const entry of window.pulsebeamDemo.sessions.values()) entry.session.pc.close();
      });
      await page.context().close();
    }
  });

  // Every allocation of the project ends with its last traffic report and its total.
  const reports = await waitFor('coturn deletes every allocation of the call and reports its total', 60_000, async () => {
    const r = coturnReports(messages);
    const totals = messages.filter((m) => m.channel.endsWith('/total_traffic')).length;
    return r.allocations.size > 0 && r.deleted.size === r.allocations.size && totals >= r.deleted.size ? r : null;
  });
  assert.equal(reports.deltas, reports.total, 'coturn\'s traffic reports add up to its totals');
  assert.ok(reports.total > 0, 'coturn relayed the call');

  // The server's count catches up with coturn's last reports.
  let counted = 0;
  await waitFor(`${relayed} reaches coturn's ${reports.total} bytes`, 10_000, async () => {
    counted = await metric(dev.url, relayed);
    return counted >= reports.total * 0.95;
  }).catch(() => {});
  t.diagnostic(`coturn reported ${reports.total} bytes in ${reports.allocations.size} allocations; the server counted ${counted}`);
  assert.ok(counted > 0, `${relayed} is ${counted}`);
  assert.ok(
    Math.abs(counted - reports.total) <= reports.total * 0.05,
    `${relayed} is ${counted}, coturn reported ${reports.total} (more than 5% apart)`,
  );
  assert.equal(await metric(dev.url, 'pulsebeam_turn_stats_reports_total{outcome="unknown_project"}'), 0);
});
