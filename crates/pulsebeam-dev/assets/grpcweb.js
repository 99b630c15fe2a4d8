// gRPC-web calls to `pulsebeam.v1.Signaling`, as @pulsebeam/peer 0.0.18 to 0.1.0-rc.2 make them
// through @protobuf-ts/grpcweb-transport: binary frames (`application/grpc-web+proto`),
// `x-grpc-web: 1`, `grpc-timeout: 900000m`, the token on unary calls only, and `Recv` as a server
// stream read frame by frame, one message per frame. The status comes in the response headers
// (an answer without data) or in the trailer frame that ends the body. One of the two transports
// a Tunnel (tunnel.js) can run on; twirp.js is the other.

const SERVICE = 'pulsebeam.v1.Signaling';
const CONTENT_TYPE = 'application/grpc-web+proto';
// The clients' deadline on every call: 15 minutes, in gRPC's notation.
const TIMEOUT = '900000m';
const HEADER_LEN = 5;
const FLAG_TRAILER = 0x80;
const FLAG_COMPRESSED = 0x01;
// Recv and Send retries, as 0.1.0-rc.2: 250 ms doubling to 1 s, plus up to 30% jitter.
const RETRY_BASE_MS = 250;
const RETRY_MAX_MS = 1000;
const RETRY_JITTER = 0.3;
// 0.1.0-rc.2 retries a failed Send 5 times, then gives up.
const SEND_RETRIES = 5;

/** gRPC status codes by number, as names (lowercase, so they read like Twirp's codes). */
export const STATUS_NAMES = Object.freeze([
  'ok',
  'cancelled',
  'unknown',
  'invalid_argument',
  'deadline_exceeded',
  'not_found',
  'already_exists',
  'permission_denied',
  'resource_exhausted',
  'failed_precondition',
  'aborted',
  'out_of_range',
  'unimplemented',
  'internal',
  'unavailable',
  'data_loss',
  'unauthenticated',
]);

/**
 * Statuses after which the 0.0.18 to 0.1.0-rc.2 clients give up: INVALID_ARGUMENT, NOT_FOUND,
 * PERMISSION_DENIED, ABORTED, UNAUTHENTICATED. Everything else is retried.
 */
export const FATAL_STATUSES = new Set([3, 5, 7, 10, 16]);

// What the clients make of an HTTP status that came without a gRPC status.
const HTTP_TO_GRPC = { 400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 429: 8, 499: 1, 500: 2, 501: 12, 503: 14, 504: 4 };

/**
 * A failed gRPC-web call: `grpcStatus` the status number, `code` its name (`unauthenticated`),
 * `msg` the server's words, `method` the call (`Recv`, `Send`, ...).
 */
export class GrpcWebError extends Error {
  constructor(grpcStatus, msg, method) {
    const code = STATUS_NAMES[grpcStatus] ?? 'unknown';
    super(`${code}: ${msg}`);
    this.name = 'GrpcWebError';
    this.grpcStatus = grpcStatus;
    this.code = code;
    this.msg = msg;
    this.method = method;
  }

  get fatal() {
    return FATAL_STATUSES.has(this.grpcStatus);
  }
}

/** One request message in one uncompressed data frame. */
export function encodeFrame(message) {
  const frame = new Uint8Array(HEADER_LEN + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, HEADER_LEN);
  return frame;
}

/** Cuts a response body into frames as its bytes arrive: `push(chunk)` returns the frames completed. */
export class FrameReader {
  constructor() {
    this.buf = new Uint8Array(0);
  }

  push(chunk) {
    if (chunk.length > 0) {
      const joined = new Uint8Array(this.buf.length + chunk.length);
      joined.set(this.buf);
      joined.set(chunk, this.buf.length);
      this.buf = joined;
    }
    const frames = [];
    while (this.buf.length >= HEADER_LEN) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset, HEADER_LEN).getUint32(1);
      if (this.buf.length < HEADER_LEN + len) break;
      frames.push({ flag: this.buf[0], payload: this.buf.slice(HEADER_LEN, HEADER_LEN + len) });
      this.buf = this.buf.subarray(HEADER_LEN + len);
    }
    return frames;
  }

  /** Bytes of a frame not yet complete. */
  get pending() {
    return this.buf.length;
  }
}

// `grpc-message` is percent-encoded outside printable ASCII.
function decodeMessage(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Reads a trailer frame (`grpc-status:N\r\ngrpc-message:...\r\n`) into `{ status, message }`. */
export function parseTrailer(payload) {
  let status;
  let message = '';
  for (const line of new TextDecoder().decode(payload).split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'grpc-status') status = /^\d+$/.test(value) ? Number(value) : NaN;
    else if (name === 'grpc-message') message = decodeMessage(value);
  }
  if (status === undefined) return { status: 13, message: 'the trailer frame has no grpc-status' };
  if (!(status >= 0 && status <= 16)) return { status: 13, message: `the trailer frame has an invalid grpc-status (${message})` };
  return { status, message };
}

/**
 * Calls `method` with one request message and reads the answer frame by frame: `onMessage`
 * gets each data frame's bytes as it arrives. Resolves once the call ended with status OK, to
 * the number of data frames; throws a GrpcWebError otherwise (an AbortError when `signal` was
 * aborted).
 */
export async function grpcWebCall(baseUrl, method, message, { token, signal, keepalive = false, onOpen, onMessage }) {
  const headers = { 'content-type': CONTENT_TYPE, 'x-grpc-web': '1', 'grpc-timeout': TIMEOUT };
  if (token) headers.authorization = `Bearer ${token}`;
  const fail = (status, msg) => new GrpcWebError(status, msg, method);
  let resp;
  try {
    resp = await fetch(`${baseUrl}/${SERVICE}/${method}`, { method: 'POST', headers, body: encodeFrame(message), signal, keepalive });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw fail(14, `cannot reach the signaling server (${err.message})`);
  }
  const headerStatus = resp.headers.get('grpc-status');
  if (headerStatus === null && !resp.ok) throw fail(HTTP_TO_GRPC[resp.status] ?? 2, `HTTP ${resp.status} without a gRPC status`);
  const type = resp.headers.get('content-type');
  if (type !== CONTENT_TYPE && type !== 'application/grpc-web') {
    throw fail(13, `the answer is ${type ?? 'untyped'}, not ${CONTENT_TYPE}: is the baseUrl the server's /grpc?`);
  }
  if (headerStatus !== null && headerStatus !== '0') {
    // Trailers only: an error before any data.
    const status = Number(headerStatus);
    const msg = decodeMessage(resp.headers.get('grpc-message') ?? '');
    throw status >= 1 && status <= 16 ? fail(status, msg) : fail(13, `invalid grpc-status ${headerStatus}`);
  }
  onOpen?.();
  if (!resp.body) throw fail(13, 'the answer has no body');
  const reader = resp.body.getReader();
  const frames = new FrameReader();
  let messages = 0;
  let trailer = null;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (signal?.aborted) throw err;
      throw fail(14, `the answer broke off (${err.message})`);
    }
    if (chunk.done) break;
    for (const frame of frames.push(chunk.value)) {
      if (trailer) throw fail(13, 'a frame follows the trailer frame');
      if (frame.flag & FLAG_TRAILER) {
        trailer = parseTrailer(frame.payload);
      } else if (frame.flag & FLAG_COMPRESSED) {
        throw fail(13, 'a compressed frame, which was never asked for');
      } else {
        messages += 1;
        onMessage?.(frame.payload);
      }
    }
  }
  if (frames.pending > 0) throw fail(15, 'the answer ends inside a frame');
  if (!trailer) {
    if (headerStatus === '0' && messages === 0) return 0;
    throw fail(15, 'the answer ended without a trailer frame (no status)');
  }
  if (trailer.status !== 0) throw fail(trailer.status, trailer.message);
  return messages;
}

/** The gRPC-web transport of a Tunnel (see tunnel.js for what a transport provides). */
export class GrpcWebTransport {
  /**
   * `baseUrl`: e.g. `http://127.0.0.1:3000/grpc`, or `http://127.0.0.1:3000/grpc/t/<token>`
   * (the token in the path then authenticates `Recv` too).
   */
  constructor({ baseUrl, token }) {
    this.name = 'grpc-web';
    this.baseUrl = baseUrl;
    this.token = token;
    this.sendRetries = SEND_RETRIES;
  }

  async unary(method, reqBytes, options) {
    let answer = null;
    const onMessage = (bytes) => {
      if (answer !== null) throw new GrpcWebError(15, `${method} answered more than one message`, method);
      answer = bytes;
    };
    await grpcWebCall(this.baseUrl, method, reqBytes, { ...options, token: this.token, onMessage });
    // Without its one message (even an empty one) a unary answer is incomplete.
    if (answer === null) throw new GrpcWebError(15, `${method} answered OK without a message`, method);
    return answer;
  }

  prepare(reqBytes, { signal } = {}) {
    return this.unary('Prepare', reqBytes, { signal });
  }

  async send(reqBytes, { keepalive = false } = {}) {
    await this.unary('Send', reqBytes, { keepalive });
  }

  /**
   * One `Recv` stream, without the token (the clients add it to unary calls only; the server
   * admits the stream by the token's binding, or by the token in the baseUrl's path): `onOpen`
   * once the server accepted it, `onBatch` with each frame's `RecvResp` bytes as it arrives.
   * Resolves when the stream ends with status OK; the Tunnel then opens the next one at once.
   */
  async recv(reqBytes, { signal, onOpen, onBatch }) {
    await grpcWebCall(this.baseUrl, 'Recv', reqBytes, { signal, onOpen, onMessage: onBatch });
  }

  /** How long to wait before the `attempt`-th retry (from 1) of a failed Recv or Send. */
  retryDelay(attempt) {
    const base = Math.min(RETRY_BASE_MS * 2 ** (attempt - 1), RETRY_MAX_MS);
    return base + Math.random() * RETRY_JITTER * base;
  }
}
