// The demo page: get a token from /auth, open a tunnel, and chat (and see video) with other peers.
//
// Query parameters (all optional): groupId, peerId, connect (peer to call), allow (policy
// "group:peer" asked of /auth, dev mode only), relay=1 (relay-only ICE through TURN),
// camera=0 (no camera), autostart=1 (start without pressing Start), split=1 (two panes, alice
// and bob, side by side). Heavier calls, e.g. to see how large real offers get: audio=1 (the
// microphone too), tracks=N (N video tracks from the camera, 1 to 4), simulcast=1 (each video
// track sent in three encodings), codecs=all (offer every codec the browser has, as apps using
// @pulsebeam/peer do, instead of VP8 only). The signaling protocol: transport=grpc-web (the
// default: gRPC-web `pulsebeam.v1.Signaling`, as @pulsebeam/peer 0.0.18 to 0.1.0-rc.2) or
// transport=twirp (Twirp `pulsebeam.v1.Tunnel`, as 0.0.17); tokenInPath=1 puts the token in the
// gRPC-web baseUrl (`/grpc/t/<token>`, which authenticates the Recv stream too); server=<origin>
// talks to a signaling server other than this page's (e.g. `pulsebeam serve`).
import { Tunnel, patternMatches } from './tunnel.js';
import { TwirpError, TwirpTransport } from './twirp.js';
import { GrpcWebError, GrpcWebTransport } from './grpcweb.js';
import { Session } from './session.js';

/** The signaling protocols the page speaks; the first is the default. */
const TRANSPORTS = ['grpc-web', 'twirp'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const sessions = new Map(); // stream key -> { session, item, video }
let tunnel = null;
let calling = null; // { groupId, peerId } this page calls, if any
// A handle for the browser console (and the end-to-end tests): the live sessions, the tunnel
// (its transport, connection id and keep-alive count) and why it closed.
window.pulsebeamDemo = { sessions, tunnel: null, closed: null };

function log(text) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').append(item);
  $('log').scrollTop = $('log').scrollHeight;
}

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
  log(text);
}

function showError(text) {
  const error = $('error');
  error.textContent = text;
  error.hidden = false;
  log(`error: ${text}`);
}

function addChat(who, text) {
  const item = document.createElement('li');
  item.dataset.from = who;
  item.textContent = `${who}: ${text}`;
  $('messages').append(item);
  $('messages').scrollTop = $('messages').scrollHeight;
}

function refreshOverall() {
  const open = [...sessions.values()].filter((s) => s.session.state === 'connected');
  $('message').disabled = open.length === 0;
  $('send').disabled = open.length === 0;
  if (!tunnel || tunnel.closed) return;
  if (open.length > 0) {
    setStatus('connected', `connected to ${open.map((s) => s.session.name).join(', ')}`);
  } else {
    const waiting = params.get('connect') || $('setup').elements.connect.value;
    setStatus('online', waiting ? `online; waiting for ${waiting}` : 'online; waiting for someone to call');
  }
}

function explainClose(error, dst) {
  if (!error) return 'signaling closed';
  if (!(error instanceof TwirpError || error instanceof GrpcWebError)) return `signaling stopped: ${error.message}`;
  const who = dst ? dst.peerId : null;
  switch (error.code) {
    case 'permission_denied': {
      if (!who) return `the server refused this page's connection: ${error.msg}`;
      const policy = tunnel?.claims?.ap;
      if (!policy) return `not allowed to reach ${who}: this token has no allow policy, so it may reach no one`;
      const policyText = `${policy.group_id}:${policy.peer_id}`;
      if (!patternMatches(policy.group_id, dst.groupId) || !patternMatches(policy.peer_id, who)) {
        return `not allowed to reach ${who}: the token's policy (${policyText}) excludes ${dst.groupId}:${who}`;
      }
      return `not allowed to reach ${who}: the server refused it (${error.msg})`;
    }
    case 'unauthenticated':
      return `the server did not accept the token (${error.msg}); reload the page to get a fresh one`;
    default:
      return `the server refused the request (${error.code}): ${error.msg}`;
  }
}

function onStream(stream, options) {
  const session = new Session(tunnel, stream, options);
  const key = `${stream.remote.groupId}/${stream.remote.peerId}/${stream.remote.connId}`;
  const item = document.createElement('li');
  item.dataset.peer = session.name;
  $('peers').append(item);
  const entry = { session, item, video: null };
  sessions.set(key, entry);
  log(`session with ${session.name} (connection ${stream.remote.connId}) opened`);

  session.addEventListener('state', (event) => {
    const { state, text } = event.detail;
    item.dataset.state = state;
    item.textContent = text;
    log(text);
    if (state === 'failed') showError(text);
    if (state === 'closed' || state === 'failed') {
      sessions.delete(key);
      entry.video?.closest('figure')?.remove();
    }
    refreshOverall();
    // The peer this page calls left (a reload says Bye, then comes back with a new connection):
    // call it again, as an app using @pulsebeam/peer does with peer.connect().
    const remote = stream.remote;
    if (state === 'closed' && session.endReason === 'bye' && calling && remote.groupId === calling.groupId && remote.peerId === calling.peerId && !tunnel.closed) {
      log(`${calling.peerId} left; calling ${calling.peerId} again`);
      tunnel.connect(calling.groupId, calling.peerId);
    }
  });
  session.addEventListener('note', (event) => log(event.detail));
  session.addEventListener('chat', (event) => addChat(session.name, event.detail));
  session.addEventListener('track', (event) => {
    if (!entry.video) {
      const figure = document.createElement('figure');
      const video = document.createElement('video');
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      video.dataset.peer = session.name;
      const caption = document.createElement('figcaption');
      caption.textContent = session.name;
      figure.append(video, caption);
      $('remote-videos').append(figure);
      entry.video = video;
    }
    entry.video.srcObject = event.detail;
    log(`receiving video from ${session.name}`);
  });
}

/** What the page sends, from the query: `{ audio, videoTracks, simulcast, allCodecs }`. */
function mediaOptions() {
  const tracks = Number.parseInt(params.get('tracks') ?? '1', 10);
  return {
    audio: params.get('audio') === '1',
    videoTracks: Number.isInteger(tracks) ? Math.min(Math.max(tracks, 1), 4) : 1,
    simulcast: params.get('simulcast') === '1',
    allCodecs: params.get('codecs') === 'all',
  };
}

async function getCamera(wanted, { audio, videoTracks }) {
  if (!wanted) return null;
  if (!navigator.mediaDevices?.getUserMedia) {
    log('no camera access in this browser context (needs https or localhost): chat only');
    return null;
  }
  try {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio });
    $('local-video').srcObject = media;
    // More video tracks are copies of the camera's: enough to show what several cost.
    const [camera] = media.getVideoTracks();
    for (let i = 1; i < videoTracks; i += 1) media.addTrack(camera.clone());
    if (audio || videoTracks > 1) log(`sending ${media.getAudioTracks().length} audio and ${media.getVideoTracks().length} video tracks`);
    return media;
  } catch (err) {
    log(`no camera (${err.name}): chat only; the other side's video still shows`);
    return null;
  }
}

async function start(form) {
  const fields = form.elements;
  const groupId = fields.groupId.value.trim();
  const peerId = fields.peerId.value.trim();
  const connect = fields.connect.value.trim();
  const allow = fields.allow.value.trim();
  const relayOnly = fields.relay.checked;
  const transportName = fields.transport.value;
  for (const el of fields) el.disabled = true;
  $('error').hidden = true;

  setStatus('starting', `getting a token for ${peerId} from /auth`);
  const query = new URLSearchParams({ groupId, peerId });
  if (allow) query.set('allow', allow);
  let auth;
  try {
    const resp = await fetch(`/auth?${query}`);
    auth = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(auth.error ?? `HTTP ${resp.status}`);
  } catch (err) {
    setStatus('failed', 'no token');
    showError(`could not get a token: ${err.message}`);
    for (const el of fields) el.disabled = false;
    return;
  }

  let transport;
  try {
    transport = makeTransport(transportName, auth.token);
  } catch (err) {
    setStatus('failed', 'bad signaling settings');
    showError(err.message);
    return;
  }
  tunnel = new Tunnel({ transport, token: auth.token });
  window.pulsebeamDemo.tunnel = tunnel;
  const policy = tunnel.claims.ap ? `${tunnel.claims.ap.group_id}:${tunnel.claims.ap.peer_id}` : 'none';
  log(`token for ${auth.groupId}:${auth.peerId}, policy ${policy}, connection ${tunnel.info.connId}`);
  log(`signaling over ${transport.name === 'twirp' ? 'Twirp' : 'gRPC-web'} at ${transport.shownUrl}`);
  tunnel.addEventListener('state', (event) => log(event.detail.text));
  tunnel.addEventListener('join', (event) => log(`sent a Join to ${event.detail.peerId}'s discovery address`));
  tunnel.addEventListener('ping', () => log('keep-alive (Ping) from the server on the Recv stream'));
  tunnel.addEventListener('close', (event) => {
    const { error, dst } = event.detail;
    window.pulsebeamDemo.closed = error
      ? { code: error.code ?? null, msg: error.msg ?? error.message, method: error.method ?? null, grpcStatus: error.grpcStatus ?? null }
      : { code: null };
    const text = explainClose(error, dst);
    setStatus(error ? 'failed' : 'closed', text);
    if (error) showError(text);
  });

  setStatus('starting', 'asking the server for ICE servers');
  let iceServers;
  try {
    iceServers = await tunnel.prepare();
  } catch (err) {
    const text = err instanceof TwirpError ? explainClose(err) : err.message;
    setStatus('failed', 'could not prepare');
    showError(`could not prepare the connection: ${text}`);
    return;
  }
  log(`ICE servers: ${iceServers.map((s) => s.urls.join(' ') + (s.username ? ' (with TURN credentials)' : '')).join(', ') || 'none'}`);
  if (relayOnly) {
    const turn = iceServers.filter((s) => s.urls.some((u) => u.startsWith('turn')));
    log(turn.length ? 'relay only: all traffic goes through the TURN server' : 'relay only, but the server offers no TURN server: connecting will fail');
  }

  const media = mediaOptions();
  const localStream = await getCamera(fields.camera.checked, media);
  const { simulcast, allCodecs } = media;
  tunnel.addEventListener('stream', (event) => onStream(event.detail, { iceServers, relayOnly, localStream, simulcast, allCodecs }));
  tunnel.run();
  if (connect) {
    calling = { groupId, peerId: connect };
    tunnel.connect(groupId, connect);
    // Silence is all a caller sees when the other side is absent or its policy drops us.
    setTimeout(() => {
      if (!tunnel.closed && sessions.size === 0) {
        setStatus('online', `still no answer from ${connect} after 10 s: is ${connect}'s page open, and does ${connect}'s token allow ${peerId}?`);
      }
    }, 10_000);
  }
  refreshOverall();
  addEventListener('pagehide', () => tunnel.close());
}

/** The signaling server's origin: this page's, or the `server` parameter's. */
function signalingOrigin() {
  const server = params.get('server');
  if (!server) return location.origin;
  let url;
  try {
    url = new URL(server);
  } catch {
    throw new Error(`server=${server} is not a URL; give an origin such as https://127.0.0.1:3443`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`server=${server} is not an http(s) origin; give one such as https://127.0.0.1:3443`);
  }
  return url.origin;
}

/** The transport `name` over which the page signals, with `token`. */
function makeTransport(name, token) {
  const origin = signalingOrigin();
  if (name === 'twirp') {
    const transport = new TwirpTransport({ baseUrl: `${origin}/twirp`, token });
    transport.shownUrl = transport.baseUrl;
    return transport;
  }
  // The token in the path authenticates every call, the Recv stream included; without it the
  // server admits the stream by the token this page's Prepare presented from the same address.
  const inPath = params.get('tokenInPath') === '1';
  const transport = new GrpcWebTransport({ baseUrl: inPath ? `${origin}/grpc/t/${token}` : `${origin}/grpc`, token });
  transport.shownUrl = inPath ? `${origin}/grpc/t/<token>` : transport.baseUrl;
  return transport;
}

function setupPeerView() {
  const form = $('setup');
  for (const name of ['groupId', 'peerId', 'connect', 'allow']) {
    if (params.has(name)) form.elements[name].value = params.get(name);
  }
  const wanted = params.get('transport');
  if (wanted !== null && !TRANSPORTS.includes(wanted)) {
    showError(`unknown transport=${wanted}: give ${TRANSPORTS.join(' or ')}; using ${TRANSPORTS[0]}`);
  }
  form.elements.transport.value = TRANSPORTS.includes(wanted) ? wanted : TRANSPORTS[0];
  if (params.get('relay') === '1') form.elements.relay.checked = true;
  if (params.get('camera') === '0') form.elements.camera.checked = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    start(form);
  });
  $('chat').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('message').value;
    if (!text) return;
    let sent = 0;
    for (const { session } of sessions.values()) if (session.send(text)) sent += 1;
    if (sent === 0) {
      showError('not connected to anyone yet: nobody to send to');
      return;
    }
    addChat('you', text);
    $('message').value = '';
  });

  const a = document.createElement('a');
  a.target = '_blank';
  const split = document.createElement('a');
  split.href = '/?split=1';
  split.textContent = 'both peers side by side';
  $('other').append('Try it: ', a, ' or ', split, '.');
  // The link opens the other side, calling back whoever this page is.
  const updateLink = () => {
    const me = form.elements.peerId.value;
    const other = form.elements.connect.value || 'bob';
    const link = new URLSearchParams({ groupId: form.elements.groupId.value, peerId: other, connect: me, autostart: '1' });
    if (form.elements.relay.checked) link.set('relay', '1');
    link.set('transport', form.elements.transport.value);
    a.href = `/?${link}`;
    a.textContent = `open ${other} in a new tab`;
  };
  form.addEventListener('input', updateLink);
  updateLink();
  if (window.self !== window.top) document.body.classList.add('embedded');

  if (params.get('autostart') === '1') start(form);
}

function setupSplitView() {
  document.body.classList.add('split');
  const panes = document.createElement('div');
  panes.className = 'panes';
  const relay = params.get('relay') === '1' ? '&relay=1' : '';
  const transport = TRANSPORTS.includes(params.get('transport')) ? `&transport=${params.get('transport')}` : '';
  for (const [me, other] of [['alice', 'bob'], ['bob', 'alice']]) {
    const frame = document.createElement('iframe');
    frame.title = me;
    frame.allow = 'camera';
    frame.src = `/?groupId=default&peerId=${me}&connect=${other}&autostart=1${relay}${transport}`;
    panes.append(frame);
  }
  $('peer-view').replaceWith(panes);
}

if (params.get('split') === '1') setupSplitView();
else setupPeerView();
