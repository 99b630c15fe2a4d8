// The signaling side of a peer: Twirp calls to `pulsebeam.v1.Tunnel`, the Recv long-poll loop,
// discovery Joins, and reliable per-stream delivery (seqnums, Acks, resends), as the 0.0.17
// client does it. WebRTC lives in session.js; this module only moves messages.
import * as proto from './proto.js';

/** Twirp error codes after which the 0.0.17 client gives up: the condition is permanent. */
export const FATAL_CODES = new Set([
  'permission_denied',
  'invalid_argument',
  'aborted',
  'bad_route',
  'malformed',
  'not_found',
  'unauthenticated',
]);

const RESEND_INTERVAL_MS = 5000;
const MAX_RESENDS = 5;
const JOIN_INTERVAL_MS = 1000;
// A closed stream is remembered this long, as 0.0.17 does: late messages from it are ignored,
// and `connect` counts it as a session that exists.
const CLOSED_STREAM_KEEP_MS = 10_000;
const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 1000;
const PREPARE_ATTEMPTS = 6; // the first try and up to 5 retries
const FIRST_CONN_ID = 16; // 0..15 are reserved

/** A failed Twirp call: `code` is the Twirp code, `msg` the server's words, `status` the HTTP status (0: no answer). */
export class TwirpError extends Error {
  constructor(code, msg, status) {
    super(`${code}: ${msg}`);
    this.name = 'TwirpError';
    this.code = code;
    this.msg = msg;
    this.status = status;
  }

  get fatal() {
    return FATAL_CODES.has(this.code);
  }
}

const STATUS_CODES = { 400: 'invalid_argument', 401: 'unauthenticated', 403: 'permission_denied', 404: 'bad_route', 408: 'deadline_exceeded', 409: 'aborted', 429: 'resource_exhausted', 503: 'unavailable' };

/** Calls one Tunnel method with a protobuf body; resolves to the response bytes or throws a TwirpError. */
export async function twirpCall(baseUrl, token, method, body, { signal, keepalive = false } = {}) {
  let resp;
  try {
    resp = await fetch(`${baseUrl}/pulsebeam.v1.Tunnel/${method}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/protobuf',
        accept: 'application/protobuf, application/json',
        authorization: `Bearer ${token}`,
      },
      body,
      signal,
      keepalive,
    });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new TwirpError('unavailable', `cannot reach the signaling server (${err.message})`, 0);
  }
  if (!resp.ok) {
    let code = STATUS_CODES[resp.status] ?? (resp.status >= 500 ? 'internal' : 'unknown');
    let msg = `HTTP ${resp.status}`;
    try {
      const json = await resp.json();
      if (typeof json.code === 'string') code = json.code;
      if (typeof json.msg === 'string') msg = json.msg;
    } catch {
      // not a Twirp JSON error body: keep what the status says
    }
    throw new TwirpError(code, msg, resp.status);
  }
  return new Uint8Array(await resp.arrayBuffer());
}

/** Reads a token's claims without verifying it (the server verifies); used to learn our own ids. */
export function decodeTokenClaims(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) throw new Error('the token is not a compact JWS (three dot-separated parts)');
  const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
  const json = new TextDecoder().decode(Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)));
  const claims = JSON.parse(json);
  if (typeof claims.gid !== 'string' || typeof claims.pid !== 'string') {
    throw new Error('the token has no gid/pid claims');
  }
  return claims;
}

/** Whether a policy pattern (`*`, `abc`, `ab*`, `*ab`, `a*b`) matches a value. */
export function patternMatches(pattern, value) {
  const star = pattern.indexOf('*');
  if (star < 0) return pattern === value;
  const prefix = pattern.slice(0, star);
  const suffix = pattern.slice(star + 1);
  return value.length >= prefix.length + suffix.length && value.startsWith(prefix) && value.endsWith(suffix);
}

function randomConnId() {
  const buf = new Uint32Array(1);
  do {
    crypto.getRandomValues(buf);
  } while (buf[0] < FIRST_CONN_ID);
  return buf[0];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const streamKey = (p) => `${p.groupId}\u0000${p.peerId}\u0000${p.connId}`;
const sameInfo = (a, b) => a.groupId === b.groupId && a.peerId === b.peerId && a.connId === b.connId;

/**
 * One remote connection (group, peer, conn id): reliable sends with resends, dedup of what
 * arrives. Events: `payload` (detail: payload object), `close` (detail: { reason, error? }).
 */
export class Stream extends EventTarget {
  constructor(tunnel, remote) {
    super();
    this.tunnel = tunnel;
    this.remote = remote;
    this.nextSeqnum = 1;
    this.unacked = new Map(); // seqnum -> { msg, resends, timer }
    this.seen = new Set();
    this.closed = false;
  }

  /** Sends a payload reliably: seqnum, resent every 5 s up to 5 times until acknowledged. */
  sendReliable(payload) {
    if (this.closed) return;
    const seqnum = this.nextSeqnum;
    this.nextSeqnum += 1;
    const msg = this.tunnel.message(this.remote, payload, seqnum, true);
    const entry = { msg, resends: 0, timer: null };
    const arm = () => {
      entry.timer = setTimeout(() => {
        if (this.closed || !this.unacked.has(seqnum)) return;
        if (entry.resends >= MAX_RESENDS) {
          this.close('timeout', new Error(`${this.remote.peerId} stopped acknowledging messages`));
          return;
        }
        entry.resends += 1;
        this.tunnel.enqueueSend(entry.msg).catch(() => {});
        arm();
      }, RESEND_INTERVAL_MS);
    };
    this.unacked.set(seqnum, entry);
    arm();
    return this.tunnel.enqueueSend(msg).catch((err) => this.tunnel.sendFailed(err, this.remote));
  }

  /** Sends a payload once (Join, Ack, Bye). */
  sendUnreliable(payload) {
    const msg = this.tunnel.message(this.remote, payload, 0, false);
    return this.tunnel.enqueueSend(msg).catch((err) => this.tunnel.sendFailed(err, this.remote));
  }

  handle(msg) {
    const { header, payload } = msg;
    if (payload.ack) {
      for (const range of payload.ack.ackRanges) {
        for (let s = range.seqnumStart; s < range.seqnumEnd && s < this.nextSeqnum; s += 1) {
          const entry = this.unacked.get(s);
          if (entry) {
            clearTimeout(entry.timer);
            this.unacked.delete(s);
          }
        }
      }
      return;
    }
    if (payload.bye) {
      this.close('bye');
      return;
    }
    if (header.reliable) {
      this.sendUnreliable({ ack: { ackRanges: [{ seqnumStart: header.seqnum, seqnumEnd: header.seqnum + 1 }] } });
      if (this.seen.has(header.seqnum)) return;
      this.seen.add(header.seqnum);
    }
    this.dispatchEvent(new CustomEvent('payload', { detail: payload }));
  }

  /** Closes the stream; says Bye to the remote unless it said Bye first. */
  close(reason, error) {
    if (this.closed) return;
    if (reason !== 'bye') this.sendUnreliable({ bye: {} });
    this.closed = true;
    for (const entry of this.unacked.values()) clearTimeout(entry.timer);
    this.unacked.clear();
    this.tunnel.streams.delete(streamKey(this.remote));
    this.tunnel.closedStreams.set(streamKey(this.remote), { remote: this.remote, at: Date.now() });
    this.dispatchEvent(new CustomEvent('close', { detail: { reason, error } }));
  }
}

/**
 * A peer's signaling connection. Events: `stream` (detail: Stream, a new remote connection),
 * `state` (detail: { state, text }), `close` (detail: { error, dst? }).
 */
export class Tunnel extends EventTarget {
  constructor({ baseUrl, token }) {
    super();
    const claims = decodeTokenClaims(token);
    this.baseUrl = baseUrl;
    this.token = token;
    this.claims = claims;
    this.info = { groupId: claims.gid, peerId: claims.pid, connId: randomConnId() };
    this.streams = new Map();
    this.closedStreams = new Map(); // key -> { remote, at }: closed less than CLOSED_STREAM_KEEP_MS ago
    this.joins = new Map(); // "group\0peer" -> timer of the next Join
    this.sendChain = Promise.resolve();
    this.abort = new AbortController();
    this.closed = false;
  }

  state(state, text) {
    this.dispatchEvent(new CustomEvent('state', { detail: { state, text } }));
  }

  /** Calls Prepare (retrying transient failures) and resolves to RTCIceServer objects. */
  async prepare() {
    let lastError;
    for (let attempt = 0; attempt < PREPARE_ATTEMPTS; attempt += 1) {
      try {
        const bytes = await twirpCall(this.baseUrl, this.token, 'Prepare', proto.encodePrepareReq(), { signal: this.abort.signal });
        return proto.decodePrepareResp(bytes).iceServers.map((s) => {
          const server = { urls: s.urls };
          if (s.username !== undefined) server.username = s.username;
          if (s.credential !== undefined) server.credential = s.credential;
          return server;
        });
      } catch (err) {
        lastError = err;
        if (err instanceof TwirpError && err.fatal) break;
        await sleep(BACKOFF_MIN_MS * 2 ** attempt);
      }
    }
    throw lastError;
  }

  /** Runs the Recv long-poll loop until the tunnel closes. */
  async run() {
    let backoff = BACKOFF_MIN_MS;
    const req = proto.encodeRecvReq({ src: this.info });
    while (!this.closed) {
      let bytes;
      try {
        bytes = await twirpCall(this.baseUrl, this.token, 'Recv', req, { signal: this.abort.signal });
      } catch (err) {
        if (this.closed) return;
        if (err instanceof TwirpError && err.fatal) {
          this.close(err);
          return;
        }
        this.state('reconnecting', `signaling server unreachable, retrying (${err.message})`);
        await sleep(backoff / 2 + Math.random() * (backoff / 2));
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        continue;
      }
      if (backoff !== BACKOFF_MIN_MS) this.state('online', 'signaling server reachable again');
      backoff = BACKOFF_MIN_MS;
      let resp;
      try {
        resp = proto.decodeRecvResp(bytes);
      } catch (err) {
        this.state('warning', `dropped an undecodable batch from the server (${err.message})`);
        continue;
      }
      for (const msg of resp.msgs) this.dispatch(msg);
    }
  }

  dispatch(msg) {
    const header = msg.header;
    if (!header?.src || !header.dst) return;
    const dst = header.dst;
    if (dst.connId >= FIRST_CONN_ID && dst.connId !== this.info.connId) return; // stale: for an earlier page load
    if (header.src.connId < FIRST_CONN_ID) return; // no reply possible to a reserved address
    const key = streamKey(header.src);
    let stream = this.streams.get(key);
    if (!stream && this.recentlyClosed(key)) return; // late messages of a session that ended
    if (!stream) {
      if (msg.payload.ack || msg.payload.bye || !(msg.payload.join || msg.payload.signal)) return;
      stream = new Stream(this, header.src);
      this.streams.set(key, stream);
      this.stopJoining(header.src.groupId, header.src.peerId);
      this.dispatchEvent(new CustomEvent('stream', { detail: stream }));
    }
    stream.handle(msg);
  }

  message(dst, payload, seqnum, reliable) {
    return { header: { src: this.info, dst, seqnum, reliable }, payload };
  }

  /** Sends messages one at a time, so one receiver sees them in the order they were made. */
  enqueueSend(msg) {
    if (this.closed) return Promise.resolve();
    const run = () =>
      // keepalive: the Byes sent while the page unloads still go out.
      twirpCall(this.baseUrl, this.token, 'Send', proto.encodeSendReq({ msg }), { keepalive: true }).then(() => undefined);
    const result = this.sendChain.then(run, run);
    this.sendChain = result.catch(() => {});
    return result;
  }

  sendFailed(err, dst) {
    if (this.closed) return;
    if (err instanceof TwirpError && err.fatal) {
      this.close(err, dst);
    } else {
      this.state('warning', `a message to ${dst.peerId} was not delivered, will retry (${err.message})`);
    }
  }

  /** A stream with this key closed less than CLOSED_STREAM_KEEP_MS ago. */
  recentlyClosed(key) {
    const closed = this.closedStreams.get(key);
    if (!closed) return false;
    if (Date.now() - closed.at < CLOSED_STREAM_KEEP_MS) return true;
    this.closedStreams.delete(key);
    return false;
  }

  /** Whether a session with (group, peer) exists: an open stream, or one closed moments ago. */
  hasSessionWith(groupId, peerId) {
    const matches = (remote) => remote.groupId === groupId && remote.peerId === peerId;
    for (const stream of this.streams.values()) if (matches(stream.remote)) return true;
    for (const [key, closed] of this.closedStreams) if (matches(closed.remote) && this.recentlyClosed(key)) return true;
    return false;
  }

  /**
   * Asks (group, peer) to connect, as 0.0.17 does: a Join to its discovery address, then every
   * second another one until a session with that peer exists. A session that exists (or closed
   * less than 10 s ago) when the first second is up stops it: then exactly one Join was sent.
   */
  connect(groupId, peerId) {
    const key = `${groupId}\u0000${peerId}`;
    if (this.joins.has(key) || this.closed) return;
    const dst = { groupId, peerId, connId: 0 };
    const join = () => {
      this.dispatchEvent(new CustomEvent('join', { detail: dst }));
      this.enqueueSend(this.message(dst, { join: {} }, 0, false)).catch((err) => this.sendFailed(err, dst));
    };
    const next = () => {
      this.joins.set(
        key,
        setTimeout(() => {
          if (this.hasSessionWith(groupId, peerId)) {
            this.joins.delete(key);
            return;
          }
          join();
          next();
        }, JOIN_INTERVAL_MS),
      );
    };
    next();
    join();
  }

  stopJoining(groupId, peerId) {
    const key = `${groupId}\u0000${peerId}`;
    const timer = this.joins.get(key);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.joins.delete(key);
    }
  }

  /** Closes every stream (each says Bye) and stops polling. `error` is why, when it was not asked for. */
  close(error, dst) {
    if (this.closed) return;
    for (const stream of [...this.streams.values()]) stream.close('closed', error);
    this.closed = true;
    for (const timer of this.joins.values()) clearTimeout(timer);
    this.joins.clear();
    this.abort.abort();
    this.dispatchEvent(new CustomEvent('close', { detail: { error, dst } }));
  }
}
