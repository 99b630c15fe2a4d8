// Protobuf (proto3 binary) codec for the handful of `pulsebeam.v1` messages the demo uses, for
// both services: Twirp `Tunnel` and gRPC-web `Signaling` share them (a `Signaling` stream's
// `RecvResp{msg = 1}` reads as a `Tunnel` `RecvResp{msgs = 1}` of one message).
// Field numbers follow the schema table of the tunnel protocol. Messages are plain objects:
//
//   PeerInfo       { groupId, peerId, connId }
//   Message        { header: { src, dst, seqnum, reliable }, payload }
//   payload        { signal } | { join: {} } | { bye: {} } | { ack: { ackRanges } } | { ping: {} }
//   signal         { generationCounter, sdp: { kind, sdp } } | { generationCounter, iceCandidate }
//   iceCandidate   { candidate, sdpMLineIndex?, sdpMid?, username?, password? }
//   ackRanges      [{ seqnumStart, seqnumEnd }]  (half-open)
//   IceServer      { urls: [], username?, credential? }
//
// proto3 omits default values (0, false, "") except for `optional` fields, which are written
// whenever they are set. Decoding skips unknown fields and throws a ProtoError on malformed input.

/** SDP kinds, as numbered in the schema. */
export const SdpKind = Object.freeze({ UNSPECIFIED: 0, OFFER: 1, ANSWER: 2, PRANSWER: 3, ROLLBACK: 4 });

/** Thrown when bytes cannot be decoded; `message` says where. */
export class ProtoError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtoError';
  }
}

const MAX_UINT32 = 0xffffffff;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

class Writer {
  constructor() {
    this.bytes = [];
  }

  varint(value) {
    if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
      throw new ProtoError(`cannot encode ${value} as uint32`);
    }
    let v = value;
    while (v > 0x7f) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
  }

  tag(field, wireType) {
    this.varint(field * 8 + wireType);
  }

  uint32(field, value, always = false) {
    if (value === undefined || value === null) return;
    if (value === 0 && !always) return;
    this.tag(field, 0);
    this.varint(value);
  }

  bool(field, value) {
    if (!value) return;
    this.tag(field, 0);
    this.varint(1);
  }

  bytesField(field, bytes) {
    this.tag(field, 2);
    this.varint(bytes.length);
    for (const b of bytes) this.bytes.push(b);
  }

  string(field, value, always = false) {
    if (value === undefined || value === null) return;
    if (value === '' && !always) return;
    this.bytesField(field, utf8Encoder.encode(String(value)));
  }

  // A sub-message is always written when present, even when empty (`join: {}` is 2 bytes).
  message(field, value, encode) {
    if (value === undefined || value === null) return;
    const inner = new Writer();
    encode(inner, value);
    this.bytesField(field, inner.bytes);
  }

  finish() {
    return Uint8Array.from(this.bytes);
  }
}

class Reader {
  constructor(bytes, what) {
    this.buf = bytes;
    this.pos = 0;
    this.end = bytes.length;
    this.what = what;
  }

  fail(reason) {
    return new ProtoError(`malformed ${this.what}: ${reason} at byte ${this.pos}`);
  }

  done() {
    return this.pos >= this.end;
  }

  varint() {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i += 1) {
      if (this.pos >= this.end) throw this.fail('truncated varint');
      const b = this.buf[this.pos];
      this.pos += 1;
      if (i < 5) result += (b & 0x7f) * scale;
      scale *= 0x80;
      if ((b & 0x80) === 0) return result;
    }
    throw this.fail('varint longer than 10 bytes');
  }

  // uint32 fields keep the low 32 bits of a wider varint, as protobuf does.
  uint32() {
    return this.varint() % 0x100000000;
  }

  lengthDelimited() {
    const len = this.varint();
    if (len > this.end - this.pos) throw this.fail(`length ${len} runs past the end`);
    const slice = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return slice;
  }

  string() {
    try {
      return utf8Decoder.decode(this.lengthDelimited());
    } catch (err) {
      if (err instanceof ProtoError) throw err;
      throw this.fail('string is not valid UTF-8');
    }
  }

  skip(wireType) {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.advance(4);
        return;
      default:
        throw this.fail(`unsupported wire type ${wireType}`);
    }
  }

  advance(n) {
    if (n > this.end - this.pos) throw this.fail('truncated fixed-width field');
    this.pos += n;
  }

  // Calls `onField(field, wireType)` for each field; the callback returns true when it consumed it.
  fields(onField) {
    while (!this.done()) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wireType = key % 8;
      if (field === 0) throw this.fail('field number 0');
      if (!onField(field, wireType)) this.skip(wireType);
    }
  }

  expect(wireType, expected, field) {
    if (wireType !== expected) throw this.fail(`field ${field} has wire type ${wireType}, expected ${expected}`);
  }
}

function sub(reader, what, decode) {
  return decode(new Reader(reader.lengthDelimited(), what));
}

// ---- PeerInfo ----
function encodePeerInfo(w, p) {
  w.string(1, p.groupId);
  w.string(2, p.peerId);
  w.uint32(3, p.connId);
}
function decodePeerInfo(r) {
  const p = { groupId: '', peerId: '', connId: 0 };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); p.groupId = r.string(); return true; }
    if (f === 2) { r.expect(t, 2, f); p.peerId = r.string(); return true; }
    if (f === 3) { r.expect(t, 0, f); p.connId = r.uint32(); return true; }
    return false;
  });
  return p;
}

// ---- MessageHeader ----
function encodeHeader(w, h) {
  w.message(1, h.src, encodePeerInfo);
  w.message(2, h.dst, encodePeerInfo);
  w.uint32(7, h.seqnum);
  w.bool(8, h.reliable);
}
function decodeHeader(r) {
  const h = { src: null, dst: null, seqnum: 0, reliable: false };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); h.src = sub(r, 'PeerInfo', decodePeerInfo); return true; }
    if (f === 2) { r.expect(t, 2, f); h.dst = sub(r, 'PeerInfo', decodePeerInfo); return true; }
    if (f === 7) { r.expect(t, 0, f); h.seqnum = r.uint32(); return true; }
    if (f === 8) { r.expect(t, 0, f); h.reliable = r.varint() !== 0; return true; }
    return false;
  });
  return h;
}

// ---- Signal, Sdp, ICECandidate ----
function encodeSdp(w, s) {
  w.uint32(1, s.kind);
  w.string(2, s.sdp);
}
function decodeSdp(r) {
  const s = { kind: 0, sdp: '' };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 0, f); s.kind = r.uint32(); return true; }
    if (f === 2) { r.expect(t, 2, f); s.sdp = r.string(); return true; }
    return false;
  });
  return s;
}
function encodeCandidate(w, c) {
  w.string(1, c.candidate);
  w.uint32(2, c.sdpMLineIndex, true);
  w.string(3, c.sdpMid, true);
  w.string(4, c.username, true);
  w.string(5, c.password, true);
}
function decodeCandidate(r) {
  const c = { candidate: '' };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); c.candidate = r.string(); return true; }
    if (f === 2) { r.expect(t, 0, f); c.sdpMLineIndex = r.uint32(); return true; }
    if (f === 3) { r.expect(t, 2, f); c.sdpMid = r.string(); return true; }
    if (f === 4) { r.expect(t, 2, f); c.username = r.string(); return true; }
    if (f === 5) { r.expect(t, 2, f); c.password = r.string(); return true; }
    return false;
  });
  return c;
}
function encodeSignal(w, s) {
  w.uint32(1, s.generationCounter);
  if (s.sdp) w.message(9, s.sdp, encodeSdp);
  else if (s.iceCandidate) w.message(10, s.iceCandidate, encodeCandidate);
}
function decodeSignal(r) {
  const s = { generationCounter: 0 };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 0, f); s.generationCounter = r.uint32(); return true; }
    if (f === 9) { r.expect(t, 2, f); delete s.iceCandidate; s.sdp = sub(r, 'Sdp', decodeSdp); return true; }
    if (f === 10) { r.expect(t, 2, f); delete s.sdp; s.iceCandidate = sub(r, 'ICECandidate', decodeCandidate); return true; }
    return false;
  });
  return s;
}

// ---- Ack ----
function encodeAckRange(w, a) {
  w.uint32(1, a.seqnumStart);
  w.uint32(2, a.seqnumEnd);
}
function decodeAckRange(r) {
  const a = { seqnumStart: 0, seqnumEnd: 0 };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 0, f); a.seqnumStart = r.uint32(); return true; }
    if (f === 2) { r.expect(t, 0, f); a.seqnumEnd = r.uint32(); return true; }
    return false;
  });
  return a;
}
function encodeAck(w, a) {
  for (const range of a.ackRanges ?? []) w.message(1, range, encodeAckRange);
}
function decodeAck(r) {
  const a = { ackRanges: [] };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); a.ackRanges.push(sub(r, 'AckRange', decodeAckRange)); return true; }
    return false;
  });
  return a;
}

const encodeEmpty = () => {};
function decodeEmpty(r) {
  r.fields(() => false);
  return {};
}

// ---- MessagePayload (oneof) ----
function encodePayload(w, p) {
  if (p.signal) w.message(1, p.signal, encodeSignal);
  else if (p.join) w.message(2, p.join, encodeEmpty);
  else if (p.bye) w.message(3, p.bye, encodeEmpty);
  else if (p.ack) w.message(4, p.ack, encodeAck);
  else if (p.ping) w.message(5, p.ping, encodeEmpty);
}
function decodePayload(r) {
  let p = {};
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); p = { signal: sub(r, 'Signal', decodeSignal) }; return true; }
    if (f === 2) { r.expect(t, 2, f); p = { join: sub(r, 'Join', decodeEmpty) }; return true; }
    if (f === 3) { r.expect(t, 2, f); p = { bye: sub(r, 'Bye', decodeEmpty) }; return true; }
    if (f === 4) { r.expect(t, 2, f); p = { ack: sub(r, 'Ack', decodeAck) }; return true; }
    // The gRPC-web server's keep-alive on a Recv stream, in a message without a header.
    if (f === 5) { r.expect(t, 2, f); p = { ping: sub(r, 'Ping', decodeEmpty) }; return true; }
    return false;
  });
  return p;
}

// ---- Message ----
function encodeMessage(w, m) {
  w.message(1, m.header, encodeHeader);
  w.message(2, m.payload, encodePayload);
}
function decodeMessage(r) {
  const m = { header: null, payload: {} };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); m.header = sub(r, 'MessageHeader', decodeHeader); return true; }
    if (f === 2) { r.expect(t, 2, f); m.payload = sub(r, 'MessagePayload', decodePayload); return true; }
    return false;
  });
  return m;
}

// ---- IceServer ----
function encodeIceServer(w, s) {
  for (const url of s.urls ?? []) w.string(1, url, true);
  w.string(2, s.username, true);
  w.string(3, s.credential, true);
}
function decodeIceServer(r) {
  const s = { urls: [] };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); s.urls.push(r.string()); return true; }
    if (f === 2) { r.expect(t, 2, f); s.username = r.string(); return true; }
    if (f === 3) { r.expect(t, 2, f); s.credential = r.string(); return true; }
    return false;
  });
  return s;
}

function toBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  throw new ProtoError('expected bytes (Uint8Array or ArrayBuffer)');
}

/** Encodes a `PrepareReq` (always empty). */
export function encodePrepareReq() {
  return new Uint8Array(0);
}

/** Encodes a `PrepareResp` `{ iceServers }`. */
export function encodePrepareResp(resp) {
  const w = new Writer();
  for (const server of resp.iceServers ?? []) w.message(1, server, encodeIceServer);
  return w.finish();
}

/** Decodes a `PrepareResp` into `{ iceServers: [{ urls, username?, credential? }] }`. */
export function decodePrepareResp(bytes) {
  const r = new Reader(toBytes(bytes), 'PrepareResp');
  const resp = { iceServers: [] };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); resp.iceServers.push(sub(r, 'IceServer', decodeIceServer)); return true; }
    return false;
  });
  return resp;
}

/** Encodes a `SendReq` `{ msg }`. */
export function encodeSendReq(req) {
  const w = new Writer();
  w.message(1, req.msg, encodeMessage);
  return w.finish();
}

/** Decodes a `SendReq` into `{ msg }`. */
export function decodeSendReq(bytes) {
  const r = new Reader(toBytes(bytes), 'SendReq');
  const req = { msg: null };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); req.msg = sub(r, 'Message', decodeMessage); return true; }
    return false;
  });
  return req;
}

/** Encodes a `RecvReq` `{ src }`. */
export function encodeRecvReq(req) {
  const w = new Writer();
  w.message(1, req.src, encodePeerInfo);
  return w.finish();
}

/** Decodes a `RecvReq` into `{ src }`. */
export function decodeRecvReq(bytes) {
  const r = new Reader(toBytes(bytes), 'RecvReq');
  const req = { src: null };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); req.src = sub(r, 'PeerInfo', decodePeerInfo); return true; }
    return false;
  });
  return req;
}

/** Encodes a `RecvResp` `{ msgs }`. */
export function encodeRecvResp(resp) {
  const w = new Writer();
  for (const msg of resp.msgs ?? []) w.message(1, msg, encodeMessage);
  return w.finish();
}

/** Decodes a `RecvResp` into `{ msgs: [Message] }`; an empty body is an empty batch. */
export function decodeRecvResp(bytes) {
  const r = new Reader(toBytes(bytes), 'RecvResp');
  const resp = { msgs: [] };
  r.fields((f, t) => {
    if (f === 1) { r.expect(t, 2, f); resp.msgs.push(sub(r, 'Message', decodeMessage)); return true; }
    return false;
  });
  return resp;
}
