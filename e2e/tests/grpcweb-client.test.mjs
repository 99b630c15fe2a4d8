// Protocol conformance with the clients' own transport library: @protobuf-ts/grpcweb-transport
// 2.9.5 (what @pulsebeam/peer 0.0.18 to 0.1.0-rc.2 bundle), configured as they configure it
// (binary format, the token added by a unary-only interceptor), against `pulsebeam serve` in
// Node, no browser. The service and its messages are defined here with @protobuf-ts/runtime's
// reflection API from the protocol's schema tables. Whatever this library accepts or refuses, the
// clients do too: the unary calls and the Recv stream succeed, and every refusal arrives as an
// RpcError with the code the clients act on, whether the status came in the answer's headers
// (trailers only), in a trailer frame after data, or only in the trailer frame because a
// cross-origin page cannot read headers the server does not expose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { GrpcWebFetchTransport } from '@protobuf-ts/grpcweb-transport';
import { LongType, MessageType, RepeatType, ScalarType } from '@protobuf-ts/runtime';
import { RpcError, ServiceType, stackIntercept } from '@protobuf-ts/runtime-rpc';

import { freePort, keygen, metricSamples, mintToken, startServe, tempDir } from '../lib/harness.mjs';

// ---- pulsebeam.v1 messages (field numbers from the protocol's schema; a oneof is named by its
// local name, as the runtime's object shape has it: `payloadType: { oneofKind, ... }`) ----
const message = (name, fields) => new MessageType(`pulsebeam.v1.${name}`, fields);
const str = (no, name, extra = {}) => ({ no, name, kind: 'scalar', T: ScalarType.STRING, ...extra });
const sub = (no, name, T, extra = {}) => ({ no, name, kind: 'message', T, ...extra });
const empty = (name) => message(name, []);

const PeerInfo = message('PeerInfo', [str(1, 'group_id'), str(2, 'peer_id'), { no: 3, name: 'conn_id', kind: 'scalar', T: ScalarType.UINT32 }]);
const MessageHeader = message('MessageHeader', [
  sub(1, 'src', () => PeerInfo),
  sub(2, 'dst', () => PeerInfo),
  { no: 7, name: 'seqnum', kind: 'scalar', T: ScalarType.UINT32 },
  { no: 8, name: 'reliable', kind: 'scalar', T: ScalarType.BOOL },
]);
const Sdp = message('Sdp', [{ no: 1, name: 'kind', kind: 'enum', T: () => ['pulsebeam.v1.SdpKind', { 0: 'SDP_KIND_UNSPECIFIED', 1: 'SDP_KIND_OFFER', 2: 'SDP_KIND_ANSWER' }, 'SDP_KIND_'] }, str(2, 'sdp')]);
const Signal = message('Signal', [{ no: 1, name: 'generation_counter', kind: 'scalar', T: ScalarType.UINT32 }, sub(9, 'sdp', () => Sdp, { oneof: 'data' })]);
const [Join, Bye, Ping] = [empty('Join'), empty('Bye'), empty('Ping')];
const MessagePayload = message('MessagePayload', [
  sub(1, 'signal', () => Signal, { oneof: 'payloadType' }),
  sub(2, 'join', () => Join, { oneof: 'payloadType' }),
  sub(3, 'bye', () => Bye, { oneof: 'payloadType' }),
  sub(5, 'ping', () => Ping, { oneof: 'payloadType' }),
]);
const Message = message('Message', [sub(1, 'header', () => MessageHeader), sub(2, 'payload', () => MessagePayload)]);
const IceServer = message('IceServer', [str(1, 'urls', { repeat: RepeatType.UNPACKED }), str(2, 'username', { opt: true }), str(3, 'credential', { opt: true })]);
const PrepareReq = empty('PrepareReq');
const PrepareResp = message('PrepareResp', [sub(1, 'ice_servers', () => IceServer, { repeat: RepeatType.UNPACKED })]);
const SendReq = message('SendReq', [sub(1, 'msg', () => Message)]);
const SendResp = empty('SendResp');
const RecvReq = message('RecvReq', [sub(1, 'src', () => PeerInfo)]);
const RecvResp = message('RecvResp', [sub(1, 'msg', () => Message)]);
const sint64 = (no, name, extra = {}) => ({ no, name, kind: 'scalar', T: ScalarType.SINT64, L: LongType.NUMBER, ...extra });
const AnalyticsMetrics = message('AnalyticsMetrics', [
  sint64(1, 'timestamp_us'),
  { no: 2, name: 'event_type', kind: 'enum', opt: true, T: () => ['pulsebeam.v1.EventType', { 0: 'UNKNOWN_EVENT', 2011: 'EVENT_ICE_CANDIDATE_PAIRING_SUCCESS', 3009: 'EVENT_SIGNALING_CONNECTED' }] },
  sint64(3, 'quality_score', { opt: true }),
  sint64(4, 'rtt_us', { opt: true }),
]);
const AnalyticsTags = message('AnalyticsTags', [sub(1, 'src', () => PeerInfo), sub(2, 'dst', () => PeerInfo)]);
const AnalyticsEvent = message('AnalyticsEvent', [sub(1, 'tags', () => AnalyticsTags), sub(2, 'metrics', () => AnalyticsMetrics, { repeat: RepeatType.UNPACKED })]);
const AnalyticsReportReq = message('AnalyticsReportReq', [sub(1, 'events', () => AnalyticsEvent, { repeat: RepeatType.UNPACKED })]);
const AnalyticsReportResp = empty('AnalyticsReportResp');

const Signaling = new ServiceType('pulsebeam.v1.Signaling', [
  { name: 'Prepare', options: {}, I: PrepareReq, O: PrepareResp },
  { name: 'Send', options: {}, I: SendReq, O: SendResp },
  { name: 'Recv', serverStreaming: true, options: {}, I: RecvReq, O: RecvResp },
  { name: 'AnalyticsReport', options: {}, I: AnalyticsReportReq, O: AnalyticsReportResp },
  // Not a method of the service: the server must answer UNIMPLEMENTED.
  { name: 'Subscribe', serverStreaming: true, options: {}, I: RecvReq, O: RecvResp },
]);
const method = (name) => Signaling.methods.find((m) => m.name === name);

/** A transport as the clients make it: binary, the token added to unary calls only. */
function clientTransport(baseUrl, token, meta = {}) {
  return new GrpcWebFetchTransport({
    baseUrl,
    format: 'binary',
    meta,
    interceptors: [
      {
        interceptUnary(next, m, input, options) {
          options.meta = { ...options.meta, Authorization: `Bearer ${token}` };
          return next(m, input, options);
        },
      },
    ],
  });
}

// The clients' deadline on every call is 15 minutes. `create` fills in the defaults of a partial
// message, as a generated client's callers get them from the generated types.
const unary = (transport, name, input, options = {}) =>
  stackIntercept('unary', transport, method(name), transport.mergeOptions({ timeout: 900_000, ...options }), method(name).I.create(input));
const stream = (transport, name, input, options = {}) =>
  stackIntercept('serverStreaming', transport, method(name), transport.mergeOptions({ timeout: 900_000, ...options }), method(name).I.create(input));
/** A decoded message as plain JSON-like data (the runtime makes null-prototype objects). */
const plain = (value) => JSON.parse(JSON.stringify(value));

/** The RpcError a call is refused with (fails when it succeeds or fails otherwise). */
async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RpcError, `an RpcError, not ${err}`);
    return err;
  }
  assert.fail('the call succeeded');
}

/**
 * Runs `body` with `fetch` answering as a browser's fetch does for a cross-origin page: the call
 * fails unless `access-control-allow-origin` admits `origin`, and the page sees only the
 * CORS-safelisted response headers and those in `access-control-expose-headers`. `expose: false`
 * ignores what the server exposes (a server that exposes no gRPC header).
 */
async function asCrossOriginPage(origin, { expose = true }, body) {
  const realFetch = globalThis.fetch;
  const safelisted = new Set(['cache-control', 'content-language', 'content-length', 'content-type', 'expires', 'last-modified', 'pragma']);
  globalThis.fetch = async (url, init) => {
    // The browser says where the page comes from.
    const headers = new Headers(init?.headers);
    headers.set('origin', origin);
    const response = await realFetch(url, { ...init, headers });
    const allowed = response.headers.get('access-control-allow-origin');
    if (allowed !== '*' && allowed !== origin) {
      await response.body?.cancel();
      throw new TypeError(`CORS: access-control-allow-origin is ${allowed}, not ${origin}`);
    }
    const exposed = new Set(
      expose ? (response.headers.get('access-control-expose-headers') ?? '').split(',').map((h) => h.trim().toLowerCase()) : [],
    );
    const visible = new Headers();
    response.headers.forEach((value, name) => {
      if (safelisted.has(name) || exposed.has(name)) visible.append(name, value);
    });
    return new Response(response.body, { status: response.status, headers: visible });
  };
  try {
    await body();
  } finally {
    globalThis.fetch = realFetch;
  }
}

const nodeFetch = globalThis.fetch;
const peer = (peerId, connId) => ({ groupId: 'room', peerId, connId });
const offer = (sdp) => ({ payloadType: { oneofKind: 'signal', signal: { generationCounter: 0, data: { oneofKind: 'sdp', sdp: { kind: 1, sdp } } } } });
const join = { payloadType: { oneofKind: 'join', join: {} } };
const kind = (msg) => msg.payload?.payloadType.oneofKind;

/** Starts `pulsebeam serve` with project `main`, one STUN URL and the admin API. */
async function startServer(t) {
  const keys = keygen();
  const [port, adminPort] = [await freePort(), await freePort()];
  const adminToken = randomBytes(24).toString('hex');
  const config = path.join(tempDir(t, 'pulsebeam-grpcweb-'), 'pulsebeam.toml');
  writeFileSync(
    config,
    `listen = "127.0.0.1:${port}"

[[projects]]
id = "main"
[[projects.keys]]
kid = "${keys.api_key}"
public_key = "${keys.public_key}"

[ice]
stun_urls = ["stun:127.0.0.1:3478"]

# A stream's headers come with its first frame: a keep-alive each second keeps the tests short.
[grpc_web]
keepalive_secs = 1

[admin]
listen = "127.0.0.1:${adminPort}"
token_sha256 = "${createHash('sha256').update(adminToken).digest('hex')}"
`,
  );
  await startServe(t, config, [port, adminPort]);
  const base = `http://127.0.0.1:${port}`;
  const revoke = async (peerId) => {
    // Node's own fetch, also while a test plays a cross-origin page.
    const response = await nodeFetch(`http://127.0.0.1:${adminPort}/admin/v1/revocations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ project: 'main', group: 'room', peer: peerId, for_secs: 600 }),
    });
    assert.equal(response.status, 200, await response.text());
  };
  const token = (peerId) => mintToken(keys, { groupId: 'room', peerId });
  return { base, revoke, token };
}

test('Prepare, Send and AnalyticsReport succeed and Recv streams each message as it comes', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const [aliceToken, bobToken] = await Promise.all([server.token('alice'), server.token('bob')]);
  const alice = clientTransport(`${server.base}/grpc`, aliceToken);
  const bob = clientTransport(`${server.base}/grpc`, bobToken);
  const [aliceInfo, bobInfo] = [peer('alice', 1_000_001), peer('bob', 2_000_002)];

  const prepared = await unary(bob, 'Prepare', {});
  assert.deepEqual(plain(prepared.response), { iceServers: [{ urls: ['stun:127.0.0.1:3478'] }] });
  assert.equal((await prepared.status).code, 'OK');

  // bob's stream, without a token (the interceptor covers unary calls only), ends at its deadline.
  const opened = Date.now();
  const recv = stream(bob, 'Recv', { src: bobInfo }, { timeout: 3000 });
  const received = [];
  recv.responses.onMessage((m) => received.push(m.msg));
  const arrived = (n) =>
    new Promise((resolve, reject) => {
      const timer = setInterval(() => {
        if (received.length >= n) resolve(clearInterval(timer));
      }, 10);
      setTimeout(() => reject(new Error(`only ${received.length} of ${n} messages: ${JSON.stringify(received)}`)), 2500);
    });
  await arrived(1);
  assert.equal(received[0].header, undefined, 'the first frame is the keep-alive (a second after the stream opened), without a header');
  assert.equal(kind(received[0]), 'ping');

  // alice's Join to bob's discovery address, then three offers to his connection, pushed in order.
  const sent = await unary(alice, 'Send', { msg: { header: { src: aliceInfo, dst: peer('bob', 0), seqnum: 0, reliable: false }, payload: join } });
  assert.deepEqual(plain(sent.response), {});
  for (let seq = 1; seq <= 3; seq += 1) {
    await unary(alice, 'Send', { msg: { header: { src: aliceInfo, dst: bobInfo, seqnum: seq, reliable: true }, payload: offer(`v=${seq}`) } });
  }
  await arrived(5);
  assert.equal(kind(received[1]), 'join');
  assert.deepEqual(plain(received[1].header.src), aliceInfo);
  assert.deepEqual(received.slice(2).map((m) => [m.header.seqnum, m.payload.payloadType.signal.data.sdp.sdp]), [[1, 'v=1'], [2, 'v=2'], [3, 'v=3']]);

  const report = await unary(bob, 'AnalyticsReport', {
    events: [{ tags: { src: bobInfo, dst: aliceInfo }, metrics: [{ timestampUs: Date.now() * 1000, eventType: 3009, rttUs: 1500 }] }],
  });
  assert.deepEqual(plain(report.response), {});

  // The grpc-timeout ends the stream with status OK, which the clients answer by reopening it.
  const status = await recv.status;
  assert.equal(status.code, 'OK');
  const lasted = Date.now() - opened;
  assert.ok(lasted >= 2500 && lasted < 6000, `the 3 s stream lasted ${lasted} ms`);
  assert.ok(received.slice(5).every((m) => kind(m) === 'ping'), 'only keep-alives after the messages');

  const reports = await metricSamples(server.base, 'pulsebeam_analytics_events_total');
  assert.equal(reports['project="main",type="EVENT_SIGNALING_CONNECTED"'], 1, JSON.stringify(reports));
});

test('refusals arrive as RpcError with the code the clients act on, from headers and from trailer frames', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t);
  const [bobToken, carolToken] = await Promise.all([server.token('bob'), server.token('carol')]);
  const bob = clientTransport(`${server.base}/grpc`, bobToken);
  const bobInfo = peer('bob', 2_000_002);

  // Trailers only: refused before any data, the status in the answer's headers.
  const cases = async (label) => {
    const stranger = clientTransport(`${server.base}/grpc`, `${bobToken.slice(0, -4)}AAAA`);
    let err = await refusal(unary(stranger, 'Prepare', {}).response);
    assert.equal(err.code, 'UNAUTHENTICATED', `${label}: a bad signature: ${err.message}`);
    err = await refusal(unary(bob, 'Send', { msg: { header: { src: peer('bob', 7), dst: peer('alice', 0) }, payload: join } }).response);
    assert.equal(err.code, 'INVALID_ARGUMENT', `${label}: a reserved conn id: ${err.message}`);
    assert.match(err.message, /src\.connId 7 is reserved/);
    err = await refusal(unary(bob, 'Send', { msg: { header: { src: peer('mallory', 99), dst: peer('alice', 0) }, payload: join } }).response);
    assert.equal(err.code, 'PERMISSION_DENIED', `${label}: someone else's src: ${err.message}`);
    err = await refusal(stream(bob, 'Subscribe', { src: bobInfo }).status);
    assert.equal(err.code, 'UNIMPLEMENTED', `${label}: an unknown method: ${err.message}`);
    assert.match(err.message, /pulsebeam\.v1\.Signaling/);
    // carol never made a unary call from here: her tokenless stream has no binding, which her
    // next unary call would mend, so it is retryable.
    err = await refusal(stream(bob, 'Recv', { src: peer('carol', 3_000_003) }).status);
    assert.equal(err.code, 'UNAVAILABLE', `${label}: a tokenless stream without binding: ${err.message}`);
  };
  await cases('same origin');
  // A cross-origin page reads the status the server exposes; and where a server exposed nothing,
  // the trailer frame that every refusal also carries would still give it.
  await asCrossOriginPage('https://app.example.com', { expose: true }, () => cases('cross-origin'));
  await asCrossOriginPage('https://app.example.com', { expose: false }, () => cases('headers hidden'));

  // The token in the base URL's path admits carol's stream (and the bare origin, where the
  // self-hosted server of the same era served the service, works like /grpc).
  for (const base of [`${server.base}/grpc/t/${carolToken}`, `${server.base}/t/${carolToken}`]) {
    const carol = new GrpcWebFetchTransport({ baseUrl: base, format: 'binary' });
    const recv = stream(carol, 'Recv', { src: peer('carol', 3_000_003) }, { timeout: 1500 });
    const first = await new Promise((resolve, reject) => {
      recv.responses.onMessage(resolve);
      recv.responses.onError(reject);
    });
    assert.equal(kind(first.msg), 'ping', base.replace(carolToken, '<token>'));
    assert.equal((await recv.status).code, 'OK');
  }
  const root = clientTransport(server.base, bobToken);
  assert.equal((await unary(root, 'Prepare', {}).status).code, 'OK');

  // A trailer frame after data: bob's stream is open (a Ping came), then he is revoked.
  await unary(bob, 'Prepare', {});
  await asCrossOriginPage('https://app.example.com', { expose: true }, async () => {
    const recv = stream(bob, 'Recv', { src: bobInfo });
    await new Promise((resolve, reject) => {
      recv.responses.onMessage(resolve);
      recv.responses.onError(reject);
    });
    await server.revoke('bob');
    const err = await refusal(recv.status);
    assert.equal(err.code, 'UNAUTHENTICATED', err.message);
    assert.match(err.message, /the token is revoked/);
  });
  // And his next stream, refused at once, is fatal too, even where only the trailer frame is read.
  await asCrossOriginPage('https://app.example.com', { expose: false }, async () => {
    const err = await refusal(stream(bob, 'Recv', { src: bobInfo }).status);
    assert.equal(err.code, 'UNAUTHENTICATED', err.message);
  });
});
