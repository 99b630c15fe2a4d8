// The demo's gRPC-web transport (grpcweb.js) against scripted answers, and the signaling client
// (tunnel.js) running on it, with mocked timers: frames and trailers are read wherever the bytes
// split, statuses map to what the 0.0.18 to 0.1.0-rc.2 clients do (fatal or retried), the token
// goes on unary calls only, and the Recv stream is reopened at once after status OK and after
// 250 ms to 1 s after a retryable failure.
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';

import * as proto from '../../crates/pulsebeam-dev/assets/proto.js';
import { FATAL_STATUSES, FrameReader, GrpcWebError, GrpcWebTransport, grpcWebCall, parseTrailer } from '../../crates/pulsebeam-dev/assets/grpcweb.js';
import { Tunnel } from '../../crates/pulsebeam-dev/assets/tunnel.js';

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const token = (gid, pid) => `${b64url({ alg: 'EdDSA', kid: 'kid_0011223344556677' })}.${b64url({ exp: 2e9, gid, pid, ap: { group_id: '*', peer_id: '*' } })}.c2ln`;
const CONTENT_TYPE = 'application/grpc-web+proto';

const frame = (flag, payload) => {
  const out = new Uint8Array(5 + payload.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
};
const data = (payload) => frame(0, payload);
const trailer = (status, message = '') =>
  frame(0x80, new TextEncoder().encode(`grpc-status:${status}\r\n${message ? `grpc-message:${message}\r\n` : ''}`));
const concat = (...parts) => Uint8Array.from(parts.flatMap((p) => [...p]));
const PING = Uint8Array.from([0x0a, 0x04, 0x12, 0x02, 0x2a, 0x00]);

/** An answer whose body arrives in `chunks`; `headers` are the response headers. */
const answer = (chunks, { status = 200, headers = { 'content-type': CONTENT_TYPE } } = {}) =>
  new Response(
    new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(chunk);
        controller.close();
      },
    }),
    { status, headers },
  );
/** A stream that opens with a Ping and stays open until the call is aborted. */
const openStream = (init) =>
  new Response(
    new ReadableStream({
      start(controller) {
        controller.enqueue(data(PING));
        init.signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
      },
    }),
    { headers: { 'content-type': CONTENT_TYPE } },
  );
const trailersOnly = (status, message) =>
  new Response(trailer(status, encodeURIComponent(message)), { headers: { 'content-type': CONTENT_TYPE, 'grpc-status': String(status), 'grpc-message': encodeURIComponent(message) } });

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

test('frames are read however the body is split, the trailer\'s status and message with them', () => {
  const body = concat(data(PING), data(new Uint8Array(0)), data(Uint8Array.from([1, 2, 3])), trailer(0));
  for (let cut = 0; cut <= body.length; cut += 1) {
    const reader = new FrameReader();
    const frames = [...reader.push(body.subarray(0, cut)), ...reader.push(body.subarray(cut))];
    assert.deepEqual(frames.map((f) => [f.flag, [...f.payload]]), [[0, [...PING]], [0, []], [0, [1, 2, 3]], [0x80, [...new TextEncoder().encode('grpc-status:0\r\n')]]], `cut at ${cut}`);
    assert.equal(reader.pending, 0);
  }
  const text = (s) => new TextEncoder().encode(s);
  assert.deepEqual(parseTrailer(text('grpc-status:16\r\ngrpc-message:the token is revoked (peer %22%C3%A9%22) 100%25\r\n')), { status: 16, message: 'the token is revoked (peer "é") 100%' });
  assert.deepEqual(parseTrailer(text('Grpc-Status: 0\r\n')), { status: 0, message: '' });
  assert.equal(parseTrailer(text('grpc-message:no status\r\n')).status, 13);
  assert.equal(parseTrailer(text('grpc-status:99\r\n')).status, 13);
  assert.equal(parseTrailer(text('grpc-status:-1\r\n')).status, 13);
});

test('a call is one framed message with the gRPC-web headers, the token only when given', async () => {
  const requests = [];
  globalThis.fetch = async (url, init) => {
    requests.push({ url, headers: init.headers, body: init.body });
    return answer([concat(data(Uint8Array.from([9])), trailer(0))]);
  };
  const got = [];
  assert.equal(await grpcWebCall('http://x/grpc', 'Prepare', Uint8Array.from([7, 7]), { token: 'tok', onMessage: (m) => got.push([...m]) }), 1);
  await grpcWebCall('http://x/grpc', 'Recv', new Uint8Array(0), {});
  assert.deepEqual(got, [[9]]);
  assert.equal(requests[0].url, 'http://x/grpc/pulsebeam.v1.Signaling/Prepare');
  assert.deepEqual(requests[0].headers, { 'content-type': CONTENT_TYPE, 'x-grpc-web': '1', 'grpc-timeout': '900000m', authorization: 'Bearer tok' });
  assert.deepEqual([...requests[0].body], [0, 0, 0, 0, 2, 7, 7]);
  assert.equal(requests[1].headers.authorization, undefined);
});

test('statuses and broken answers become GrpcWebErrors the clients give up on or retry', async () => {
  const cases = [
    ['trailers only, UNAUTHENTICATED', () => trailersOnly(16, 'the token is revoked'), 'unauthenticated', true, 'the token is revoked'],
    ['a trailer frame after data', () => answer([data(PING), trailer(14, 'server shutting down')]), 'unavailable', false, 'server shutting down'],
    ['status hidden from the page, in the trailer frame only', () => answer([trailer(7, 'policy')]), 'permission_denied', true, 'policy'],
    ['no trailer frame', () => answer([data(PING)]), 'data_loss', false, /without a trailer/],
    ['cut inside a frame', () => answer([data(PING).subarray(0, 7)]), 'data_loss', false, /inside a frame/],
    ['not gRPC-web', () => new Response('<html>', { headers: { 'content-type': 'text/html' } }), 'internal', false, /text\/html/],
    ['HTTP 404 without a status', () => new Response('', { status: 404 }), 'not_found', true, /HTTP 404/],
    ['HTTP 503 without a status', () => new Response('', { status: 503 }), 'unavailable', false, /HTTP 503/],
    ['no connection', () => { throw new TypeError('fetch failed'); }, 'unavailable', false, /cannot reach the signaling server/],
  ];
  for (const [label, respond, code, fatal, msg] of cases) {
    globalThis.fetch = async () => respond();
    const err = await grpcWebCall('http://x/grpc', 'Recv', new Uint8Array(0), {}).catch((e) => e);
    assert.ok(err instanceof GrpcWebError, `${label}: ${err}`);
    assert.equal(err.code, code, label);
    assert.equal(err.fatal, fatal, label);
    assert.equal(err.method, 'Recv', label);
    if (typeof msg === 'string') assert.equal(err.msg, msg, label);
    else assert.match(err.msg, msg, label);
  }
  assert.deepEqual([...FATAL_STATUSES].sort((a, b) => a - b), [3, 5, 7, 10, 16]);
  // A unary answer is exactly one message, an empty one included.
  const transport = new GrpcWebTransport({ baseUrl: 'http://x/grpc', token: 't' });
  globalThis.fetch = async () => answer([concat(data(new Uint8Array(0)), trailer(0))]);
  assert.deepEqual([...(await transport.unary('Send', new Uint8Array(0), {}))], []);
  globalThis.fetch = async () => answer([trailer(0)]);
  assert.equal((await transport.unary('Send', new Uint8Array(0), {}).catch((e) => e)).code, 'data_loss');
  globalThis.fetch = async () => answer([concat(data(PING), data(PING), trailer(0))]);
  assert.equal((await transport.unary('Send', new Uint8Array(0), {}).catch((e) => e)).code, 'data_loss');
});

describeTunnel();

function describeTunnel() {
  let server;
  beforeEach(() => {
    server = { calls: [], recv: [], send: [] };
    globalThis.fetch = async (url, init) => {
      const method = url.split('/').pop();
      server.calls.push({ method, authorization: init.headers.authorization });
      const next = server[method === 'Recv' ? 'recv' : 'send'].shift();
      if (next) return next(init);
      if (method === 'Recv') {
        // An open stream: nothing until aborted.
        return new Promise((_, reject) => init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
      }
      return answer([concat(data(new Uint8Array(0)), trailer(0))]);
    };
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  });
  afterEach(() => mock.timers.reset());

  const settle = async () => {
    for (let i = 0; i < 30; i += 1) await new Promise((resolve) => setImmediate(resolve));
  };
  const aliceTunnel = () => {
    const alice = token('default', 'alice');
    return new Tunnel({ transport: new GrpcWebTransport({ baseUrl: 'http://x/grpc', token: alice }), token: alice });
  };
  const recvs = () => server.calls.filter((c) => c.method === 'Recv').length;

  test('the tunnel reads its stream frame by frame, counts Pings, and reopens it at once after OK', async () => {
    const tunnel = aliceTunnel();
    const bob = { groupId: 'default', peerId: 'bob', connId: 40_000 };
    const join = proto.encodeRecvResp({ msgs: [{ header: { src: bob, dst: { ...tunnel.info }, seqnum: 0, reliable: false }, payload: { join: {} } }] });
    server.recv.push(() => answer([data(PING), concat(data(join), trailer(0))]));
    const streams = [];
    tunnel.addEventListener('stream', (e) => streams.push(e.detail.remote));
    tunnel.run();
    await settle();
    assert.equal(tunnel.pings, 1);
    assert.deepEqual(streams, [bob]);
    assert.equal(recvs(), 2, 'reopened without waiting');
    assert.ok(server.calls.filter((c) => c.method === 'Recv').every((c) => c.authorization === undefined), 'no token on Recv');
    assert.ok(server.calls.filter((c) => c.method === 'Send').every((c) => c.authorization?.startsWith('Bearer ')), 'the token on Send');
    tunnel.close();
  });

  test('a stream reopened after a failure that says nothing yet is online once a Prepare answers', async () => {
    const tunnel = aliceTunnel();
    const states = [];
    tunnel.addEventListener('state', (e) => states.push(e.detail.state));
    server.recv.push(() => trailersOnly(14, 'busy'));
    // The next Recv stays open without headers (the server's first frame not due yet).
    tunnel.run();
    await settle();
    assert.deepEqual(states, ['reconnecting']);
    mock.timers.tick(400);
    await settle();
    assert.equal(recvs(), 2);
    assert.equal(server.calls.filter((c) => c.method === 'Prepare').length, 1, 'one probe with the reopened stream');
    assert.deepEqual(states, ['reconnecting', 'online']);
    tunnel.close();
  });

  test('a retryable failure reopens the stream after 250 ms to 1 s; a fatal one closes the tunnel', async () => {
    const tunnel = aliceTunnel();
    const states = [];
    tunnel.addEventListener('state', (e) => states.push(e.detail.state));
    for (let i = 0; i < 4; i += 1) server.recv.push(() => trailersOnly(14, 'busy'));
    server.recv.push(openStream);
    tunnel.run();
    await settle();
    assert.equal(recvs(), 1);
    // 250 ms (+ up to 30%), then 500, then 1000 (the cap) twice.
    for (const [wait, extra] of [[250, 75], [500, 150], [1000, 300], [1000, 300]]) {
      const before = recvs();
      mock.timers.tick(wait - 1);
      await settle();
      assert.equal(recvs(), before, `not before ${wait} ms`);
      mock.timers.tick(extra + 1);
      await settle();
      assert.equal(recvs(), before + 1, `by ${wait + extra} ms`);
    }
    assert.ok(states.includes('reconnecting'));
    assert.equal(states.at(-1), 'online', 'the open stream says the server is reachable again');

    const closed = [];
    const other = aliceTunnel();
    other.addEventListener('close', (e) => closed.push(e.detail.error));
    server.recv.push(() => trailersOnly(16, 'the token is revoked'));
    const before = recvs();
    other.run();
    await settle();
    mock.timers.tick(5000);
    await settle();
    assert.equal(recvs(), before + 1, 'no retry after UNAUTHENTICATED');
    assert.equal(closed.length, 1);
    assert.equal(closed[0].code, 'unauthenticated');
    assert.equal(closed[0].method, 'Recv');
    tunnel.close();
  });

  test('a Send is retried 5 times on a retryable status; a fatal status closes the tunnel', async () => {
    const tunnel = aliceTunnel();
    const states = [];
    tunnel.addEventListener('state', (e) => states.push(e.detail));
    for (let i = 0; i < 6; i += 1) server.send.push(() => trailersOnly(8, 'slow down'));
    tunnel.connect('default', 'bob');
    for (let i = 0; i < 20; i += 1) {
      mock.timers.tick(400);
      await settle();
    }
    const sends = server.calls.filter((c) => c.method === 'Send').length;
    assert.ok(sends >= 6, `the Join and 5 retries: ${sends}`);
    assert.ok(states.some((s) => s.state === 'warning' && /resource_exhausted/.test(s.text)), JSON.stringify(states));
    assert.equal(tunnel.closed, false);

    const closed = [];
    tunnel.addEventListener('close', (e) => closed.push(e.detail));
    server.send.length = 0;
    server.send.push(() => trailersOnly(7, 'policy excludes default:carol'));
    tunnel.connect('default', 'carol');
    await settle();
    mock.timers.tick(2000);
    await settle();
    assert.equal(closed.length, 1);
    assert.equal(closed[0].error.code, 'permission_denied');
    assert.deepEqual(closed[0].dst, { groupId: 'default', peerId: 'carol', connId: 0 });
  });
}
