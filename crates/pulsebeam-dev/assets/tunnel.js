// The signaling side of a peer: the Recv loop, discovery Joins, and reliable per-stream delivery
// (seqnums, Acks, resends), as the 0.0.17 client does it, over one of two transports:
//
// - twirp.js: Twirp `pulsebeam.v1.Tunnel` (0.0.17), `Recv` a long-poll;
// - grpcweb.js: gRPC-web `pulsebeam.v1.Signaling` (0.0.18 to 0.1.0-rc.2), `Recv` a stream.
//
// A transport has `name`, `sendRetries` and these methods, whose errors carry `code` (a name
// such as 'unauthenticated'), `msg` and `fatal` (the client gives up):
//
//   prepare(reqBytes, { signal })            -> PrepareResp bytes
//   send(reqBytes, { keepalive })            -> resolves once the server took the message
//   recv(reqBytes, { signal, onOpen, onBatch }) -> one Recv call: `onOpen()` once the server
//                                               accepted it, `onBatch(RecvResp bytes)` for what
//                                               arrives; resolves when the call ended well
//   retryDelay(attempt)                      -> ms to wait before the attempt-th retry (from 1)
//
// WebRTC lives in session.js; this module only moves messages.
import * as proto from './proto.js';

const RESEND_INTERVAL_MS = 5000;
const MAX_RESENDS = 5;
const JOIN_INTERVAL_MS = 1000;
// A closed stream is remembered this long, as 0.0.17 does: late messages from it are ignored,
// and `connect` counts it as a session that exists.
const CLOSED_STREAM_KEEP_MS = 10_000;
const PREPARE_BACKOFF_MS = 50;
const PREPARE_ATTEMPTS = 6; // the first try and up to 5 retries
const FIRST_CONN_ID = 16; // 0..15 are reserved

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
  /** `transport`: a TwirpTransport or GrpcWebTransport; `token`: the token it presents (for our ids). */
  constructor({ transport, token }) {
    super();
    const claims = decodeTokenClaims(token);
    this.transport = transport;
    this.claims = claims;
    this.info = { groupId: claims.gid, peerId: claims.pid, connId: randomConnId() };
    this.streams = new Map();
    this.closedStreams = new Map(); // key -> { remote, at }: closed less than CLOSED_STREAM_KEEP_MS ago
    this.joins = new Map(); // "group\0peer" -> timer of the next Join
    this.sendChain = Promise.resolve();
    this.abort = new AbortController();
    this.closed = false;
    this.pings = 0; // keep-alives the server sent on Recv streams
  }

  state(state, text) {
    this.dispatchEvent(new CustomEvent('state', { detail: { state, text } }));
  }

  /** Calls Prepare (retrying transient failures) and resolves to RTCIceServer objects. */
  async prepare() {
    let lastError;
    for (let attempt = 0; attempt < PREPARE_ATTEMPTS; attempt += 1) {
      try {
        const bytes = await this.transport.prepare(proto.encodePrepareReq(), { signal: this.abort.signal });
        return proto.decodePrepareResp(bytes).iceServers.map((s) => {
          const server = { urls: s.urls };
          if (s.username !== undefined) server.username = s.username;
          if (s.credential !== undefined) server.credential = s.credential;
          return server;
        });
      } catch (err) {
        lastError = err;
        if (err.fatal) break;
        await sleep(PREPARE_BACKOFF_MS * 2 ** attempt);
      }
    }
    throw lastError;
  }

  /**
   * Runs the Recv loop until the tunnel closes: a Recv call that ends well (a Twirp poll
   * answered, a gRPC-web stream ended with status OK) is followed by the next at once; one that
   * fails is retried after the transport's backoff, unless the failure is fatal.
   */
  async run() {
    let failures = 0;
    let calls = 0; // Recv calls made; a probe speaks only for the call it was made with
    const req = proto.encodeRecvReq({ src: this.info });
    const onOpen = () => {
      if (failures > 0) this.state('online', 'signaling server reachable again');
      failures = 0;
    };
    const onBatch = (bytes) => this.receive(bytes);
    // The gRPC-web server sends a stream's headers with its first frame, so a stream reopened
    // after a failure may say nothing for up to its keep-alive interval: a Prepare answered
    // meanwhile shows that the server is reachable again (the backoff stays until a Recv
    // itself opens).
    const probe = (call) => {
      this.transport.prepare(proto.encodePrepareReq(), { signal: this.abort.signal }).then(
        () => {
          if (call === calls && failures > 0 && !this.closed) this.state('online', 'signaling server reachable again');
        },
        () => {},
      );
    };
    while (!this.closed) {
      try {
        calls += 1;
        if (failures > 0) probe(calls);
        await this.transport.recv(req, { signal: this.abort.signal, onOpen, onBatch });
      } catch (err) {
        if (this.closed) return;
        if (err.fatal) {
          this.close(err);
          return;
        }
        failures += 1;
        this.state('reconnecting', `signaling server unreachable, retrying (${err.message})`);
        await sleep(this.transport.retryDelay(failures));
      }
    }
  }

  /** Handles what one Recv answer (Twirp) or stream frame (gRPC-web) holds. */
  receive(bytes) {
    let resp;
    try {
      resp = proto.decodeRecvResp(bytes);
    } catch (err) {
      this.state('warning', `dropped an undecodable batch from the server (${err.message})`);
      return;
    }
    for (const msg of resp.msgs) this.dispatch(msg);
  }

  dispatch(msg) {
    const header = msg.header;
    if (!header && msg.payload.ping) {
      // The gRPC-web server's keep-alive: logged, nothing else, as the clients do.
      this.pings += 1;
      this.dispatchEvent(new CustomEvent('ping', { detail: this.pings }));
      return;
    }
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
    const req = proto.encodeSendReq({ msg });
    const run = async () => {
      // A transport that retries (gRPC-web, as 0.1.0-rc.2) does so here, holding later sends
      // back so that the receiver still sees them in order.
      for (let attempt = 0; ; attempt += 1) {
        try {
          // keepalive: the Byes sent while the page unloads still go out.
          await this.transport.send(req, { keepalive: true });
          return;
        } catch (err) {
          if (err.fatal || attempt >= this.transport.sendRetries || this.closed) throw err;
          await sleep(this.transport.retryDelay(attempt + 1));
        }
      }
    };
    const result = this.sendChain.then(run, run);
    this.sendChain = result.catch(() => {});
    return result;
  }

  sendFailed(err, dst) {
    if (this.closed) return;
    if (err.fatal) {
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
