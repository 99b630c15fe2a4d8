// The demo's hand-written protobuf codec against the golden wire examples of the tunnel protocol.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import * as proto from '../../crates/pulsebeam-dev/assets/proto.js';

const examplesPath = fileURLToPath(new URL('../../testdata/wire-examples.json', import.meta.url));
const examples = Object.fromEntries(
  JSON.parse(readFileSync(examplesPath, 'utf8')).examples.map((e) => [e.name, Buffer.from(e.hex, 'hex')]),
);

const alice = { groupId: 'default', peerId: 'alice', connId: 2818993334 };
const bob = { groupId: 'default', peerId: 'bob', connId: 2913253855 };
const bobDiscovery = { groupId: 'default', peerId: 'bob', connId: 0 };

const joinMsg = { header: { src: alice, dst: bobDiscovery, seqnum: 0, reliable: false }, payload: { join: {} } };

// name -> [encoder, decoder, object]
const cases = {
  RecvReq: [proto.encodeRecvReq, proto.decodeRecvReq, { src: alice }],
  'SendReq.join_discovery': [proto.encodeSendReq, proto.decodeSendReq, { msg: joinMsg }],
  'SendReq.signal_offer': [
    proto.encodeSendReq,
    proto.decodeSendReq,
    {
      msg: {
        header: { src: bob, dst: alice, seqnum: 1, reliable: true },
        payload: { signal: { generationCounter: 0, sdp: { kind: proto.SdpKind.OFFER, sdp: 'v=0\r\n' } } },
      },
    },
  ],
  'SendReq.signal_ice': [
    proto.encodeSendReq,
    proto.decodeSendReq,
    {
      msg: {
        header: { src: bob, dst: alice, seqnum: 2, reliable: true },
        payload: {
          signal: {
            generationCounter: 0,
            iceCandidate: {
              candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host',
              sdpMLineIndex: 0,
              sdpMid: '0',
              username: 'abcd',
            },
          },
        },
      },
    },
  ],
  'SendReq.ack': [
    proto.encodeSendReq,
    proto.decodeSendReq,
    {
      msg: {
        header: { src: alice, dst: bob, seqnum: 0, reliable: false },
        payload: { ack: { ackRanges: [{ seqnumStart: 1, seqnumEnd: 2 }] } },
      },
    },
  ],
  'SendReq.bye': [
    proto.encodeSendReq,
    proto.decodeSendReq,
    { msg: { header: { src: alice, dst: bob, seqnum: 0, reliable: false }, payload: { bye: {} } } },
  ],
  'RecvResp.one': [proto.encodeRecvResp, proto.decodeRecvResp, { msgs: [joinMsg] }],
  'RecvResp.empty': [proto.encodeRecvResp, proto.decodeRecvResp, { msgs: [] }],
  'PrepareResp.foss': [
    proto.encodePrepareResp,
    proto.decodePrepareResp,
    { iceServers: [{ urls: ['stun:stun.l.google.com:19302'] }] },
  ],
};

test('every golden example has a case', () => {
  for (const name of Object.keys(examples)) {
    if (name === 'PrepareReq') continue;
    assert.ok(cases[name], `no case for golden example ${name}`);
  }
  assert.equal(proto.encodePrepareReq().length, examples.PrepareReq.length);
});

for (const [name, [encode, decode, object]] of Object.entries(cases)) {
  test(`${name}: encodes to the golden bytes`, () => {
    assert.equal(Buffer.from(encode(object)).toString('hex'), examples[name].toString('hex'));
  });

  test(`${name}: decodes from the golden bytes`, () => {
    assert.deepEqual(decode(new Uint8Array(examples[name])), object);
  });
}

test('large connection ids round-trip (above 2^31)', () => {
  for (const connId of [16, 2 ** 31, 2 ** 32 - 1]) {
    const bytes = proto.encodeRecvReq({ src: { groupId: 'g', peerId: 'p', connId } });
    assert.equal(proto.decodeRecvReq(bytes).src.connId, connId);
  }
});

test('a TURN server with credentials round-trips', () => {
  const resp = {
    iceServers: [
      { urls: ['stun:127.0.0.1:3478'] },
      { urls: ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp'], username: '1700000000:alice', credential: 'c2VjcmV0' },
    ],
  };
  assert.deepEqual(proto.decodePrepareResp(proto.encodePrepareResp(resp)), resp);
});

test('a gRPC-web stream frame with the server\'s keep-alive Ping decodes as a message without a header', () => {
  // RecvResp{msg: Message{payload: MessagePayload{ping: Ping{}}}}, as the server sends it.
  const ping = Uint8Array.from([0x0a, 0x04, 0x12, 0x02, 0x2a, 0x00]);
  assert.deepEqual(proto.decodeRecvResp(ping), { msgs: [{ header: null, payload: { ping: {} } }] });
  assert.deepEqual(proto.encodeRecvResp({ msgs: [{ payload: { ping: {} } }] }), ping);
});

test('unknown fields are skipped', () => {
  // RecvReq with an extra varint field 9 and an extra length-delimited field 10 around src.
  const src = proto.encodeRecvReq({ src: alice });
  const bytes = Uint8Array.from([0x48, 0x05, ...src, 0x52, 0x02, 0x61, 0x62]);
  assert.deepEqual(proto.decodeRecvReq(bytes), { src: alice });
});

test('malformed input is rejected with a ProtoError, never a crash', () => {
  const golden = examples['SendReq.signal_ice'];
  for (let cut = 1; cut < golden.length; cut += 1) {
    assert.throws(() => proto.decodeSendReq(golden.subarray(0, cut)), proto.ProtoError, `cut at ${cut}`);
  }
  // field number 0
  assert.throws(() => proto.decodeRecvResp(Uint8Array.from([0x02, 0x00])), /field number 0/);
  // wire type 3 (start group) is not supported
  assert.throws(() => proto.decodeRecvResp(Uint8Array.from([0x0b])), /wire type 3/);
  // a string field with a varint wire type
  assert.throws(() => proto.decodeRecvReq(Uint8Array.from([0x0a, 0x02, 0x08, 0x01])), /wire type 0, expected 2/);
  // invalid UTF-8 in a peer id
  assert.throws(() => proto.decodeRecvReq(Uint8Array.from([0x0a, 0x03, 0x12, 0x01, 0xff])), /UTF-8/);
  // a varint that never ends
  assert.throws(() => proto.decodeRecvReq(Uint8Array.from(new Array(11).fill(0xff))), proto.ProtoError);
});

test('values that cannot be uint32 are refused when encoding', () => {
  for (const connId of [-1, 2 ** 32, 1.5]) {
    assert.throws(() => proto.encodeRecvReq({ src: { groupId: 'g', peerId: 'p', connId } }), proto.ProtoError);
  }
});
