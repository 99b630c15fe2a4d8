// Twirp calls to `pulsebeam.v1.Tunnel`, as @pulsebeam/peer 0.0.17 makes them: protobuf bodies,
// the token on every call, `Recv` as a long-poll answered with a batch of messages. One of the
// two transports a Tunnel (tunnel.js) can run on; grpcweb.js is the other.

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

const SERVICE = 'pulsebeam.v1.Tunnel';
// Recv retries: 50 ms doubling to 1 s, each wait drawn from its upper half.
const RETRY_BASE_MS = 50;
const RETRY_MAX_MS = 1000;

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
    resp = await fetch(`${baseUrl}/${SERVICE}/${method}`, {
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

/** The Twirp transport of a Tunnel (see tunnel.js for what a transport provides). */
export class TwirpTransport {
  /** `baseUrl`: e.g. `http://127.0.0.1:3000/twirp`. */
  constructor({ baseUrl, token }) {
    this.name = 'twirp';
    this.baseUrl = baseUrl;
    this.token = token;
    // 0.0.17 sends each message once; the Tunnel's own resends cover reliable ones.
    this.sendRetries = 0;
  }

  prepare(reqBytes, { signal } = {}) {
    return twirpCall(this.baseUrl, this.token, 'Prepare', reqBytes, { signal });
  }

  async send(reqBytes, { keepalive = false } = {}) {
    await twirpCall(this.baseUrl, this.token, 'Send', reqBytes, { keepalive });
  }

  /** One long-poll: `onOpen` once answered, then `onBatch` with the `RecvResp` bytes. */
  async recv(reqBytes, { signal, onOpen, onBatch }) {
    const bytes = await twirpCall(this.baseUrl, this.token, 'Recv', reqBytes, { signal });
    onOpen();
    onBatch(bytes);
  }

  /** How long to wait before the `attempt`-th retry (from 1) of a failed Recv. */
  retryDelay(attempt) {
    const base = Math.min(RETRY_BASE_MS * 2 ** (attempt - 1), RETRY_MAX_MS);
    return base / 2 + Math.random() * (base / 2);
  }
}
