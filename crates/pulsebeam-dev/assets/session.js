// One WebRTC session with a remote connection: an RTCPeerConnection negotiated over a tunnel
// Stream with "perfect negotiation" (the side with the larger conn id is impolite), a chat data
// channel, and video both ways when a camera is there.
import { SdpKind } from './proto.js';

const KIND_TO_TYPE = { [SdpKind.OFFER]: 'offer', [SdpKind.ANSWER]: 'answer', [SdpKind.PRANSWER]: 'pranswer', [SdpKind.ROLLBACK]: 'rollback' };
const TYPE_TO_KIND = { offer: SdpKind.OFFER, answer: SdpKind.ANSWER, pranswer: SdpKind.PRANSWER, rollback: SdpKind.ROLLBACK };
// Three layers of one video track, full, half and quarter resolution (`simulcast=1`).
const SIMULCAST_ENCODINGS = [
  { rid: 'f' },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'q', scaleResolutionDownBy: 4 },
];

/**
 * Events: `state` (detail: { state, text }), `chat` (detail: text), `track` (detail: MediaStream),
 * `note` (detail: text, something worth showing that is not a state change).
 */
export class Session extends EventTarget {
  constructor(tunnel, stream, { iceServers, relayOnly, localStream, simulcast = false, allCodecs = false }) {
    super();
    this.stream = stream;
    this.remote = stream.remote;
    this.name = stream.remote.peerId;
    this.polite = tunnel.info.connId < stream.remote.connId;
    this.relayOnly = relayOnly;
    this.allCodecs = allCodecs;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.signalChain = Promise.resolve();
    this.candidateErrors = [];
    this.localCandidates = 0;
    this.closed = false;
    this.endReason = null;

    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' });
    this.pc = pc;
    // Negotiated on both sides with the same id: no in-band announcement, nothing to race.
    this.chat = pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.chat.onopen = () => this.setState('connected', `connected to ${this.name}: chat open`);
    this.chat.onclose = () => {
      if (!this.closed) this.setState('disconnected', `chat with ${this.name} closed`);
    };
    this.chat.onmessage = (event) => this.dispatchEvent(new CustomEvent('chat', { detail: String(event.data) }));

    if (localStream) {
      for (const track of localStream.getTracks()) {
        if (simulcast && track.kind === 'video') {
          pc.addTransceiver(track, { direction: 'sendrecv', streams: [localStream], sendEncodings: SIMULCAST_ENCODINGS });
        } else {
          pc.addTrack(track, localStream);
        }
      }
    } else if (!this.polite) {
      // Without a camera the offering side still asks for the other's video. The answering
      // side adds nothing: the offer's m-line brings its receiver (an extra transceiver of its
      // own would only force a second, larger offer).
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    pc.ontrack = (event) => {
      const media = event.streams[0] ?? new MediaStream([event.track]);
      this.dispatchEvent(new CustomEvent('track', { detail: media }));
    };

    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate || !candidate.candidate) {
        if (!candidate) this.gatheringDone();
        return;
      }
      this.localCandidates += 1;
      const ice = { candidate: candidate.candidate };
      if (candidate.sdpMLineIndex !== null) ice.sdpMLineIndex = candidate.sdpMLineIndex;
      if (candidate.sdpMid !== null) ice.sdpMid = candidate.sdpMid;
      if (candidate.usernameFragment) ice.username = candidate.usernameFragment;
      stream.sendReliable({ signal: { generationCounter: 0, iceCandidate: ice } });
    };
    pc.onicecandidateerror = (event) => {
      const text = describeCandidateError(event);
      if (!text) return;
      this.candidateErrors.push(text);
      this.note(text);
    };
    pc.onconnectionstatechange = () => {
      switch (pc.connectionState) {
        case 'connecting':
          // The chat channel may open before this event arrives: never step back from connected.
          if (this.state !== 'connected') this.setState('connecting', `connecting to ${this.name} (checking network paths)`);
          break;
        case 'connected':
          if (this.state !== 'connected' && this.chat.readyState === 'open') {
            this.setState('connected', `connected to ${this.name} again`);
          }
          break;
        case 'failed':
          this.setState('failed', this.failureText());
          break;
        case 'disconnected':
          this.setState('disconnected', `lost the connection to ${this.name}; waiting for it to come back`);
          break;
        default:
          break;
      }
    };

    stream.addEventListener('payload', (event) => {
      const signal = event.detail.signal;
      if (signal) this.signalChain = this.signalChain.then(() => this.onSignal(signal));
    });
    stream.addEventListener('close', (event) => {
      const { reason, error } = event.detail;
      this.endReason = reason; // 'bye': the remote left; 'timeout'; 'closed': we ended it
      if (reason === 'bye') this.finish('closed', `${this.name} left`);
      else if (reason === 'timeout') this.finish('failed', `${this.name} stopped answering: ${error?.message ?? 'no acknowledgement'}`);
      else this.finish('closed', `session with ${this.name} closed`);
    });
    this.setState('negotiating', `found ${this.name}; negotiating (${this.polite ? 'answering' : 'offering'} side)`);
  }

  setState(state, text) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, text } }));
  }

  note(text) {
    this.dispatchEvent(new CustomEvent('note', { detail: text }));
  }

  failureText() {
    if (this.candidateErrors.length > 0) {
      return `could not connect to ${this.name}: ${this.candidateErrors[this.candidateErrors.length - 1]}`;
    }
    if (this.relayOnly) return `could not connect to ${this.name} through the TURN relay (no working relay path)`;
    return `could not connect to ${this.name}: no network path worked (ICE failed)`;
  }

  gatheringDone() {
    if (this.localCandidates > 0 || this.closed) return;
    const why = this.candidateErrors.length > 0 ? this.candidateErrors[this.candidateErrors.length - 1] : 'no address could be gathered';
    const what = this.relayOnly ? 'no relay address from the TURN server' : 'no local network address';
    this.setState('failed', `cannot connect to ${this.name}: ${what} (${why})`);
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      if (!this.allCodecs) preferCompactCodecs(this.pc);
      await this.pc.setLocalDescription();
      this.sendDescription(this.pc.localDescription);
    } catch (err) {
      this.note(`could not make an offer: ${err.message}`);
    } finally {
      this.makingOffer = false;
    }
  }

  sendDescription(description) {
    this.note(`sent ${description.type} to ${this.name} (${description.sdp.length} bytes of SDP)`);
    this.stream.sendReliable({ signal: { generationCounter: 0, sdp: { kind: TYPE_TO_KIND[description.type] ?? 0, sdp: description.sdp } } });
  }

  async onSignal(signal) {
    if (this.closed) return;
    try {
      if (signal.sdp) {
        const type = KIND_TO_TYPE[signal.sdp.kind];
        if (!type) {
          this.note(`ignored an SDP of unknown kind ${signal.sdp.kind} from ${this.name}`);
          return;
        }
        const description = { type, sdp: signal.sdp.sdp };
        const readyForOffer = !this.makingOffer && (this.pc.signalingState === 'stable' || this.settingRemoteAnswer);
        const collision = type === 'offer' && !readyForOffer;
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        this.settingRemoteAnswer = type === 'answer';
        await this.pc.setRemoteDescription(description);
        this.settingRemoteAnswer = false;
        if (type === 'offer') {
          if (!this.allCodecs) preferCompactCodecs(this.pc);
          await this.pc.setLocalDescription();
          this.sendDescription(this.pc.localDescription);
        }
      } else if (signal.iceCandidate) {
        const c = signal.iceCandidate;
        try {
          await this.pc.addIceCandidate({
            candidate: c.candidate,
            sdpMLineIndex: c.sdpMLineIndex ?? null,
            sdpMid: c.sdpMid ?? null,
            usernameFragment: c.username ?? null,
          });
        } catch (err) {
          if (!this.ignoreOffer) this.note(`ignored a network candidate from ${this.name}: ${err.message}`);
        }
      }
    } catch (err) {
      this.settingRemoteAnswer = false;
      this.note(`negotiation with ${this.name} hit an error: ${err.message}`);
    }
  }

  /** Sends a chat line; false when the channel is not open. */
  send(text) {
    if (this.chat.readyState !== 'open') return false;
    this.chat.send(text);
    return true;
  }

  /** Ends the session (the tunnel stream says Bye). */
  close() {
    this.stream.close('closed');
  }

  finish(state, text) {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    this.setState(state, text);
  }
}

// An SDP listing every codec Chromium has costs about 4 kB per video track (e2e/README.md has
// measurements), and the server bounds a signaling payload. Video here is a demo: VP8 (and its
// retransmissions) is enough everywhere; `codecs=all` offers everything, as real apps do.
function preferCompactCodecs(pc) {
  const capabilities = globalThis.RTCRtpReceiver?.getCapabilities?.('video');
  if (!capabilities) return;
  const wanted = capabilities.codecs.filter((c) => /^video\/(vp8|rtx)$/i.test(c.mimeType));
  if (!wanted.some((c) => /vp8/i.test(c.mimeType))) return;
  for (const transceiver of pc.getTransceivers()) {
    if (transceiver.receiver.track?.kind !== 'video' || transceiver.stopped) continue;
    try {
      transceiver.setCodecPreferences(wanted);
    } catch {
      // keep the browser's defaults
    }
  }
}

function describeCandidateError(event) {
  const where = event.url || (event.address ? `${event.address}:${event.port}` : 'an ICE server');
  const code = event.errorCode;
  // 701: a STUN/TURN server could not be reached from one local interface; common and harmless
  // when another interface works, so it is reported only as a note with the server named.
  if (code === 401) return `the TURN server ${where} refused our credentials (401 ${event.errorText || 'Unauthorized'})`;
  if (code === 403) return `the TURN server ${where} forbids this relay (403 ${event.errorText || 'Forbidden'})`;
  if (code === 701) return `could not reach ${where} from one network interface (${event.errorText || 'no answer'})`;
  if (code) return `ICE server ${where} answered ${code} ${event.errorText || ''}`.trim();
  return '';
}
