// The agent's phone as the desktop sees it.
//
// GET /v1/agent/softphone says which phone an agent has. In `desk_phone` mode calls ring the
// agent's SIP desk phone (registered with digest at the gateway) and the desktop only shows
// whether it is registered. In `webrtc` mode the browser is the phone: JsSIP registers over
// the gateway's SIP over WebSocket with the agent's api access token (`Authorization: Bearer`,
// RFC 8898), takes the calls the gateway offers, places outside calls, and sends DTMF as SIP
// INFO (the gateway turns it into RFC 4733 toward the caller).
//
// Registration is driven here rather than by JsSIP's own timer so that every REGISTER carries
// a token that is valid for a while: on each (re)connection and before each expiry the phone
// asks the api client for a fresh token first. JsSIP reconnects a dropped WebSocket by itself
// (1 s doubling to 30 s); the page is told, and says so.

import { UA, WebSocketInterface } from 'jssip';
import type { RTCSession } from 'jssip/lib/RTCSession';
import type { IncomingRTCSessionEvent, OutgoingRTCSessionEvent } from 'jssip/lib/UA';
import { Api, SessionExpired } from './api';

export interface WebRtcSettings {
  ws_url: string;
  sip_uri: string;
  display_name: string;
  auth: string;
  register_expires_s: number;
  dial_domain: string;
}

export interface SoftphoneConfig {
  mode: string;
  sip_username: string | null;
  desk_phone_registered: boolean;
  webrtc: WebRtcSettings | null;
}

/** The registration as the page shows it. */
export type Registration = 'connecting' | 'registered' | 'reconnecting' | 'failed' | 'stopped';

/** What the line is doing. */
export type Line = 'idle' | 'ringing' | 'calling' | 'in_call';

export interface Phone {
  /** One line for the desktop: which phone, and whether it can ring. */
  describe(): string;
  /** Whether calls can reach the agent now. */
  ready(): boolean;
  /** Stops the phone (logout, session over). */
  stop(): void;
}

class DeskPhone implements Phone {
  constructor(private cfg: SoftphoneConfig) {}
  describe(): string {
    if (!this.cfg.sip_username) return 'No phone: ask your administrator for a SIP login.';
    return this.cfg.desk_phone_registered
      ? `Desk phone ${this.cfg.sip_username}: registered`
      : `Desk phone ${this.cfg.sip_username}: not registered (calls cannot ring)`;
  }
  ready(): boolean {
    return this.cfg.desk_phone_registered;
  }
  stop(): void {}
}

/** How the page hears about the browser phone. */
export interface PhoneListener {
  /** Anything shown changed (registration, line, hold, mute). */
  changed(): void;
  /** A message for the agent; `null` clears the phone's last message. */
  message(text: string | null, bad: boolean): void;
}

/** The microphone could not be opened: the message the agent sees. */
export function microphoneProblem(e: unknown): string {
  const name = (e as { name?: string } | null)?.name ?? '';
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return 'Microphone access is blocked: allow the microphone for this site in the browser, then try again.';
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return 'No microphone found: connect a headset or microphone, then try again.';
  }
  if (name === 'NotReadableError') {
    return 'The microphone is in use by another program or cannot be read.';
  }
  return `The microphone could not be opened: ${(e as Error)?.message ?? String(e)}`;
}

/** The browser phone: JsSIP over the gateway's SIP over WebSocket. */
export class BrowserPhone implements Phone {
  registration: Registration = 'connecting';
  line: Line = 'idle';
  held = false;
  muted = false;
  /** Who is on the line (the caller's or the dialled number). */
  peer = '';
  private ua: UA;
  private session: RTCSession | null = null;
  private mic: MediaStream | null = null;
  private stopped = false;
  private registerAttempt = 0;
  private expiring: number | undefined;

  constructor(
    private api: Api,
    readonly cfg: WebRtcSettings,
    private listener: PhoneListener,
    private audio: HTMLAudioElement,
  ) {
    this.ua = new UA({
      sockets: [new WebSocketInterface(cfg.ws_url)],
      uri: cfg.sip_uri,
      display_name: cfg.display_name,
      register: false,
      register_expires: cfg.register_expires_s,
      session_timers: true,
      connection_recovery_min_interval: 1,
      connection_recovery_max_interval: 15,
      user_agent: 'Switchboard desk (JsSIP)',
    });
    this.ua.on('connecting', () => {
      if (this.registration !== 'reconnecting') this.setRegistration('connecting');
    });
    this.ua.on('connected', () => void this.register());
    this.ua.on('disconnected', () => {
      if (this.stopped) return;
      this.setRegistration('reconnecting');
      this.listener.message('Phone connection lost — reconnecting…', true);
    });
    this.ua.on('registered', () => {
      this.registerAttempt = 0;
      this.setRegistration('registered');
      this.listener.message(null, false);
    });
    this.ua.on('unregistered', () => {
      // Also fired when the connection drops: that is 'reconnecting', said above.
      if (!this.stopped && this.ua.isConnected()) this.setRegistration('failed');
    });
    this.ua.on('registrationFailed', (e) => void this.registrationFailed(e.response?.status_code));
    // Renew with a fresh token rather than letting JsSIP reuse the one it has.
    this.ua.on('registrationExpiring', () => void this.register());
    this.ua.on('newRTCSession', (e: IncomingRTCSessionEvent | OutgoingRTCSessionEvent) => this.newSession(e));
    // The api client refreshed its token (a 401 somewhere, or ahead of a REGISTER): present the
    // new one from now on and re-register with it, so the gateway checks it (revocation) too.
    api.onToken = (token) => {
      this.useToken(token);
      if (this.ua.isRegistered()) this.ua.register();
    };
    this.ua.start();
  }

  describe(): string {
    const who = this.cfg.sip_uri.replace(/^sip:/, '');
    switch (this.registration) {
      case 'registered':
        return `Browser phone ${who}: ready to ring`;
      case 'connecting':
        return `Browser phone ${who}: connecting…`;
      case 'reconnecting':
        return `Browser phone ${who}: connection lost, reconnecting…`;
      case 'failed':
        return `Browser phone ${who}: not registered (calls cannot ring)`;
      case 'stopped':
        return `Browser phone ${who}: off`;
    }
  }

  ready(): boolean {
    return this.registration === 'registered';
  }

  stop(): void {
    this.stopped = true;
    this.api.onToken = () => {};
    window.clearTimeout(this.expiring);
    this.session?.terminate();
    this.releaseMic();
    this.ua.stop();
    this.setRegistration('stopped');
  }

  private setRegistration(r: Registration): void {
    this.registration = r;
    this.listener.changed();
  }

  private useToken(token: string): void {
    this.ua.set('authorization_jwt', `Bearer ${token}`);
  }

  /** REGISTER with a token valid for the whole registration (or a good while of it). */
  private async register(force = false): Promise<void> {
    if (this.stopped) return;
    try {
      const minValid = Math.min(this.cfg.register_expires_s * 1000, 120_000);
      this.useToken(await this.api.freshToken(minValid, force));
    } catch (e) {
      if (e instanceof SessionExpired) return; // the page goes back to login
      this.registrationFailed(undefined);
      return;
    }
    if (this.stopped) return;
    this.ua.register();
  }

  private async registrationFailed(status: number | undefined): Promise<void> {
    // Without a connection there is nothing to retry yet: 'connected' registers again.
    if (this.stopped || !this.ua.isConnected()) return;
    this.registerAttempt += 1;
    this.setRegistration('failed');
    if (status === 401 && this.registerAttempt === 1) {
      // The gateway refused the token (expired, revoked): one retry with a new one; if the
      // api refuses to refresh, the session is over and the page logs out.
      await this.register(true);
      return;
    }
    const why = status === 403
      ? 'the gateway refused this account (suspended or disabled)'
      : status
        ? `the gateway answered ${status}`
        : 'no answer from the gateway';
    this.listener.message(`The browser phone could not register: ${why}. Retrying…`, true);
    const wait = Math.min(30_000, 2000 * 2 ** Math.min(this.registerAttempt - 1, 4));
    window.clearTimeout(this.expiring);
    this.expiring = window.setTimeout(() => {
      if (this.ua.isConnected()) void this.register();
    }, wait);
  }

  private newSession(e: IncomingRTCSessionEvent | OutgoingRTCSessionEvent): void {
    const session = e.session;
    if (this.session && !this.session.isEnded()) {
      if (e.originator === 'remote') session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      return;
    }
    this.session = session;
    this.held = false;
    this.muted = false;
    this.peer = session.remote_identity?.uri?.user ?? '';
    this.line = e.originator === 'remote' ? 'ringing' : 'calling';
    session.on('peerconnection', (ev) => this.attachRemoteAudio(ev.peerconnection));
    if (session.connection) this.attachRemoteAudio(session.connection);
    session.on('accepted', () => this.setLine('in_call'));
    session.on('confirmed', () => this.setLine('in_call'));
    session.on('hold', () => {
      this.held = true;
      this.listener.changed();
    });
    session.on('unhold', () => {
      this.held = false;
      this.listener.changed();
    });
    session.on('muted', () => {
      this.muted = true;
      this.listener.changed();
    });
    session.on('unmuted', () => {
      this.muted = false;
      this.listener.changed();
    });
    const ended = (cause: string, failed: boolean) => {
      if (this.session !== session) return;
      this.session = null;
      this.releaseMic();
      this.held = false;
      this.muted = false;
      this.setLine('idle');
      // A caller who hangs up while it rings (or a ring that times out) is 'Canceled'; our
      // own refusals already said why.
      if (failed && !['Canceled', 'Rejected', 'Busy'].includes(cause)) {
        this.listener.message(`The call did not connect: ${cause}.`, true);
      }
    };
    session.on('ended', (ev) => ended(ev.cause, false));
    session.on('failed', (ev) => ended(ev.cause, true));
    session.on('peerconnection:setremotedescriptionfailed', (err) => {
      this.listener.message(`The call's audio could not be set up: ${String((err as Error)?.message ?? err)}`, true);
    });
    this.listener.changed();
  }

  private setLine(l: Line): void {
    this.line = l;
    this.listener.changed();
  }

  private attachRemoteAudio(pc: RTCPeerConnection): void {
    pc.addEventListener('track', (t) => {
      this.audio.srcObject = t.streams[0] ?? new MediaStream([t.track]);
      void this.audio.play().catch(() => {});
    });
  }

  /** Opens the microphone; on failure tells the agent why and returns null. */
  private async openMic(): Promise<MediaStream | null> {
    try {
      this.mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      return this.mic;
    } catch (e) {
      this.listener.message(microphoneProblem(e), true);
      return null;
    }
  }

  private releaseMic(): void {
    this.mic?.getTracks().forEach((t) => t.stop());
    this.mic = null;
  }

  /** Answers the ringing call (after the microphone opened). */
  async answer(): Promise<void> {
    const session = this.session;
    if (!session || this.line !== 'ringing') return;
    const mic = await this.openMic();
    if (!mic) {
      // Without a microphone the call cannot be taken here; it goes back to the queue.
      session.terminate({ status_code: 480, reason_phrase: 'Microphone Unavailable' });
      return;
    }
    if (this.session !== session || session.isEnded()) {
      this.releaseMic();
      return;
    }
    this.listener.message(null, false);
    session.answer({ mediaStream: mic, pcConfig: { iceServers: [] } });
  }

  /** Places an outside call to an E.164 number through the tenant's trunk. */
  async dial(number: string): Promise<void> {
    if (this.session) {
      this.listener.message('Finish the current call first.', true);
      return;
    }
    if (!/^\+[1-9][0-9]{6,14}$/.test(number)) {
      this.listener.message('Enter the number in international format, e.g. +14155550100.', true);
      return;
    }
    const mic = await this.openMic();
    if (!mic) return;
    try {
      // The INVITE carries the current token; make sure it lasts the call's setup.
      this.useToken(await this.api.freshToken(60_000));
    } catch {
      this.releaseMic();
      return;
    }
    this.listener.message(null, false);
    this.ua.call(`sip:${number}@${this.cfg.dial_domain}`, {
      mediaStream: mic,
      pcConfig: { iceServers: [] },
    });
  }

  hangUp(): void {
    this.session?.terminate();
  }

  toggleHold(): void {
    const s = this.session;
    if (!s || this.line !== 'in_call') return;
    if (this.held) s.unhold();
    else s.hold();
  }

  toggleMute(): void {
    const s = this.session;
    if (!s || this.line !== 'in_call') return;
    if (this.muted) s.unmute({ audio: true });
    else s.mute({ audio: true });
  }

  /** One keypad digit, as SIP INFO (JsSIP's default). */
  dtmf(tone: string): void {
    if (this.line !== 'in_call' || !/^[0-9*#A-D]$/.test(tone)) return;
    this.session?.sendDTMF(tone, { duration: 160, interToneGap: 80 });
  }
}

class Unsupported implements Phone {
  constructor(private mode: string) {}
  describe(): string {
    return `This desktop build has no ${this.mode} phone; use a desk phone.`;
  }
  ready(): boolean {
    return false;
  }
  stop(): void {}
}

export async function loadPhone(
  api: Api,
  listener: PhoneListener,
  audio: HTMLAudioElement,
): Promise<Phone> {
  const cfg = await api.req<SoftphoneConfig>('GET', '/v1/agent/softphone');
  if (cfg.mode === 'webrtc' && cfg.webrtc) {
    if (!window.RTCPeerConnection || !navigator.mediaDevices?.getUserMedia) {
      return new Unsupported('WebRTC (this browser lacks it)');
    }
    return new BrowserPhone(api, cfg.webrtc, listener, audio);
  }
  if (cfg.mode === 'desk_phone') return new DeskPhone(cfg);
  return new Unsupported(cfg.mode);
}
