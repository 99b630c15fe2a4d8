// The demo's signaling client (tunnel.js on twirp.js) against a scripted Twirp server: the 0.0.17 rules for
// discovery Joins, reliable delivery (seqnums, Acks, resends, dedup), stale messages, Bye and
// fatal errors, with mocked timers.
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';

import * as proto from '../../crates/pulsebeam-dev/assets/proto.js';
import { Tunnel, decodeTokenClaims, patternMatches } from '../../crates/pulsebeam-dev/assets/tunnel.js';
import { TwirpError, TwirpTransport, twirpCall } from '../../crates/pulsebeam-dev/assets/twirp.js';

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const token = (gid, pid, ap = { group_id: '*', peer_id: '*' }) =>
  `${b64url({ alg: 'EdDSA', kid: 'kid_0011223344556677' })}.${b64url({ exp: 2e9, gid, pid, ap })}.c2ln`;

/** A fake fetch: records every Send, answers Recv from a queue, and can fail Sends. */
function fakeServer() {
  const sent = [];
  const recvQueue = [];
  const server = {
    sent,
    sendStatus: 200,
    sendBody: '',
    deliver(msgs) {
      recvQueue.push(proto.encodeRecvResp({ msgs }));
    },
    async fetch(url, init) {
      const method = url.split('/').pop();
      const body = new Uint8Array(init.body);
      if (method === 'Send') {
        sent.push(proto.decodeSendReq(body).msg);
        if (server.sendStatus !== 200) return new Response(server.sendBody, { status: server.sendStatus });
        return new Response(new Uint8Array(0), { status: 200 });
      }
      if (method === 'Recv') {
        // Long-poll: answer queued batches, else hang until aborted.
        if (recvQueue.length > 0) return new Response(recvQueue.shift(), { status: 200 });
        return new Promise((_, reject) => init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
      }
      if (method === 'Prepare') {
        return new Response(proto.encodePrepareResp({ iceServers: [{ urls: ['turn:127.0.0.1:3478'], username: '1:u', credential: 'c' }] }), { status: 200 });
      }
      return new Response('{"code":"bad_route","msg":"no such method"}', { status: 404 });
    },
  };
  return server;
}

let server;
const realFetch = globalThis.fetch;
beforeEach(() => {
  server = fakeServer();
  globalThis.fetch = (url, init) => server.fetch(url, init);
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
});
afterEach(() => {
  mock.timers.reset();
  globalThis.fetch = realFetch;
});

const settle = async () => {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

const bob = { groupId: 'default', peerId: 'bob', connId: 40_000 };

function aliceTunnel() {
  const alice = token('default', 'alice');
  const tunnel = new Tunnel({ transport: new TwirpTransport({ baseUrl: 'http://127.0.0.1:1/twirp', token: alice }), token: alice });
  return tunnel;
}

function fromBob(tunnel, payload, { seqnum = 0, reliable = false, dst } = {}) {
  return { header: { src: bob, dst: dst ?? tunnel.info, seqnum, reliable }, payload };
}

test('the token names the tunnel; the connection id is random and never reserved', () => {
  const tunnel = aliceTunnel();
  assert.equal(tunnel.info.groupId, 'default');
  assert.equal(tunnel.info.peerId, 'alice');
  assert.ok(tunnel.info.connId >= 16 && tunnel.info.connId < 2 ** 32);
  assert.throws(() => decodeTokenClaims('not-a-token'), /three dot-separated parts/);
});

test('connect sends a Join to conn 0 every second until a session with that peer exists', async () => {
  const tunnel = aliceTunnel();
  tunnel.connect('default', 'bob');
  await settle();
  mock.timers.tick(1000);
  await settle();
  mock.timers.tick(1000);
  await settle();
  assert.equal(server.sent.length, 3);
  for (const msg of server.sent) {
    assert.deepEqual(msg.header.dst, { groupId: 'default', peerId: 'bob', connId: 0 });
    assert.deepEqual(msg.payload, { join: {} });
    assert.equal(msg.header.reliable, false);
  }
  // bob answers: a session opens and the Joins stop.
  const streams = [];
  tunnel.addEventListener('stream', (e) => streams.push(e.detail));
  tunnel.dispatch(fromBob(tunnel, { join: {} }));
  assert.equal(streams.length, 1);
  mock.timers.tick(5000);
  await settle();
  assert.equal(server.sent.filter((m) => m.payload.join).length, 3);
  tunnel.close();
});

test('connect sends exactly one Join while a session with that peer exists or closed under 10 s ago', async () => {
  const tunnel = aliceTunnel();
  const joins = () => server.sent.filter((m) => m.payload.join).length;
  const closes = [];
  tunnel.addEventListener('stream', (e) => e.detail.addEventListener('close', (c) => closes.push(c.detail.reason)));
  tunnel.dispatch(fromBob(tunnel, { join: {} }));
  // bob's page reloads: its old connection says Bye, and the app calls bob again at once.
  tunnel.dispatch(fromBob(tunnel, { bye: {} }));
  assert.deepEqual(closes, ['bye']);
  tunnel.connect('default', 'bob');
  for (let i = 0; i < 5; i += 1) {
    mock.timers.tick(1000);
    await settle();
  }
  assert.equal(joins(), 1, 'the 0.0.17 client believes a session exists: one Join only');
  // Late messages of the closed session are ignored; a new connection of bob's opens a session.
  tunnel.dispatch(fromBob(tunnel, { signal: { generationCounter: 0, sdp: { kind: proto.SdpKind.OFFER, sdp: 'v=0\r\n' } } }, { seqnum: 1, reliable: true }));
  assert.equal(tunnel.streams.size, 0);
  tunnel.dispatch({ header: { src: { ...bob, connId: 50_000 }, dst: tunnel.info, seqnum: 0, reliable: false }, payload: { join: {} } });
  assert.equal(tunnel.streams.size, 1);

  // More than 10 s after the close, with no session, connect Joins every second again.
  tunnel.streams.values().next().value.close('closed');
  mock.timers.tick(10_001);
  tunnel.connect('default', 'bob');
  await settle();
  mock.timers.tick(1000);
  await settle();
  assert.equal(joins(), 3);
  tunnel.close();
});

test('reliable messages are acked with [seq, seq+1) and delivered once', async () => {
  const tunnel = aliceTunnel();
  const payloads = [];
  tunnel.addEventListener('stream', (e) => e.detail.addEventListener('payload', (p) => payloads.push(p.detail)));
  const offer = { signal: { generationCounter: 0, sdp: { kind: proto.SdpKind.OFFER, sdp: 'v=0\r\n' } } };
  tunnel.dispatch(fromBob(tunnel, offer, { seqnum: 1, reliable: true }));
  tunnel.dispatch(fromBob(tunnel, offer, { seqnum: 1, reliable: true })); // a resend
  await settle();
  assert.equal(payloads.length, 1);
  const acks = server.sent.filter((m) => m.payload.ack);
  assert.equal(acks.length, 2, 'every copy is acknowledged, so the sender stops resending');
  assert.deepEqual(acks[0].payload.ack.ackRanges, [{ seqnumStart: 1, seqnumEnd: 2 }]);
  assert.deepEqual(acks[0].header.dst, bob);
  tunnel.close();
});

test('messages for another connection of ours are dropped as stale; discovery ones are taken', () => {
  const tunnel = aliceTunnel();
  const streams = [];
  tunnel.addEventListener('stream', (e) => streams.push(e.detail));
  tunnel.dispatch(fromBob(tunnel, { join: {} }, { dst: { ...tunnel.info, connId: tunnel.info.connId === 99 ? 100 : 99 } }));
  assert.equal(streams.length, 0);
  tunnel.dispatch({ header: { src: { ...bob, connId: 3 }, dst: tunnel.info, seqnum: 0, reliable: false }, payload: { join: {} } });
  assert.equal(streams.length, 0, 'reserved source connection ids are ignored');
  tunnel.dispatch(fromBob(tunnel, { join: {} }, { dst: { groupId: 'default', peerId: 'alice', connId: 0 } }));
  assert.equal(streams.length, 1);
  tunnel.close();
});

test('unacknowledged messages are resent every 5 s, 5 times, then the session ends with a Bye', async () => {
  const tunnel = aliceTunnel();
  let stream;
  const closes = [];
  tunnel.addEventListener('stream', (e) => {
    stream = e.detail;
    stream.addEventListener('close', (c) => closes.push(c.detail.reason));
  });
  tunnel.dispatch(fromBob(tunnel, { join: {} }));
  const signal = { signal: { generationCounter: 0, sdp: { kind: proto.SdpKind.ANSWER, sdp: 'v=0\r\n' } } };
  stream.sendReliable(signal);
  stream.sendReliable(signal);
  await settle();
  const sentSeqnums = () => server.sent.filter((m) => m.payload.signal).map((m) => m.header.seqnum);
  assert.deepEqual(sentSeqnums(), [1, 2]);
  assert.ok(server.sent.filter((m) => m.payload.signal).every((m) => m.header.reliable));

  // bob acknowledges 1 only.
  tunnel.dispatch(fromBob(tunnel, { ack: { ackRanges: [{ seqnumStart: 1, seqnumEnd: 2 }] } }));
  for (let i = 0; i < 5; i += 1) {
    mock.timers.tick(5000);
    await settle();
  }
  assert.deepEqual(sentSeqnums(), [1, 2, 2, 2, 2, 2, 2]);
  assert.deepEqual(closes, []);
  mock.timers.tick(5000);
  await settle();
  assert.deepEqual(closes, ['timeout']);
  assert.deepEqual(server.sent.at(-1).payload, { bye: {} });
  assert.deepEqual(server.sent.at(-1).header.dst, bob);
  tunnel.close();
});

test('a Bye from the remote closes its session without answering Bye', async () => {
  const tunnel = aliceTunnel();
  const closes = [];
  tunnel.addEventListener('stream', (e) => e.detail.addEventListener('close', (c) => closes.push(c.detail.reason)));
  tunnel.dispatch(fromBob(tunnel, { join: {} }));
  tunnel.dispatch(fromBob(tunnel, { bye: {} }));
  await settle();
  assert.deepEqual(closes, ['bye']);
  assert.equal(server.sent.filter((m) => m.payload.bye).length, 0);
  assert.equal(tunnel.streams.size, 0);
  tunnel.close();
});

test('a fatal Send error closes the tunnel and names the destination; closing says Bye to everyone', async () => {
  const tunnel = aliceTunnel();
  tunnel.dispatch(fromBob(tunnel, { join: {} }));
  const closed = [];
  tunnel.addEventListener('close', (e) => closed.push(e.detail));
  server.sendStatus = 403;
  server.sendBody = JSON.stringify({ code: 'permission_denied', msg: 'policy excludes default:carol' });
  tunnel.connect('default', 'carol');
  await settle();
  assert.equal(closed.length, 1);
  assert.ok(closed[0].error instanceof TwirpError);
  assert.equal(closed[0].error.code, 'permission_denied');
  assert.equal(closed[0].error.fatal, true);
  assert.deepEqual(closed[0].dst, { groupId: 'default', peerId: 'carol', connId: 0 });
  assert.equal(server.sent.filter((m) => m.payload.bye).length, 1, 'bob was told Bye');
  assert.equal(tunnel.closed, true);
});

test('twirpCall maps answers to TwirpError codes, transient or fatal', async () => {
  const answers = [
    [new Response('{"code":"resource_exhausted","msg":"slow down"}', { status: 429 }), 'resource_exhausted', false],
    [new Response('{"code":"unauthenticated","msg":"token expired"}', { status: 401 }), 'unauthenticated', true],
    [new Response('<html>proxy error</html>', { status: 502 }), 'internal', false],
    [new Response('', { status: 403 }), 'permission_denied', true],
  ];
  for (const [response, code, fatal] of answers) {
    globalThis.fetch = async () => response;
    const err = await twirpCall('http://x/twirp', 't', 'Recv', new Uint8Array(0)).catch((e) => e);
    assert.ok(err instanceof TwirpError, code);
    assert.equal(err.code, code);
    assert.equal(err.fatal, fatal, code);
  }
  globalThis.fetch = async () => {
    throw new TypeError('fetch failed');
  };
  const err = await twirpCall('http://x/twirp', 't', 'Recv', new Uint8Array(0)).catch((e) => e);
  assert.equal(err.code, 'unavailable');
  assert.equal(err.fatal, false);
  assert.match(err.msg, /cannot reach the signaling server/);
});

test('prepare turns the answer into RTCIceServer objects', async () => {
  const tunnel = aliceTunnel();
  assert.deepEqual(await tunnel.prepare(), [{ urls: ['turn:127.0.0.1:3478'], username: '1:u', credential: 'c' }]);
});

test('policy patterns match as the token spec says', () => {
  const cases = [
    ['*', 'anything', true],
    ['abc', 'abc', true],
    ['abc', 'abcd', false],
    ['ab*', 'abz', true],
    ['*ab', 'zab', true],
    ['a*b', 'ab', true],
    ['a*a', 'a', false],
    ['carol', 'bob', false],
  ];
  for (const [pattern, value, want] of cases) assert.equal(patternMatches(pattern, value), want, `${pattern} ~ ${value}`);
});
