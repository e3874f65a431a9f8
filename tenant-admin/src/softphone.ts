// The agent's phone as the desktop sees it.
//
// Today calls ring the agent's SIP desk phone (registered with digest at the gateway); the
// desktop shows whether it is registered and follows its calls through the event feed. The
// api's GET /v1/agent/softphone says which phone an agent has; when the gateway offers SIP
// over WebSocket with WebRTC media it will return a `webrtc` block (WebSocket URL, SIP URI,
// credentials) and a browser phone built on JsSIP will implement the same interface. Until
// then a `webrtc` block is reported as unsupported by this build rather than half-used.

import { Api } from './api';

export interface SoftphoneConfig {
  mode: string;
  sip_username: string | null;
  desk_phone_registered: boolean;
  webrtc: unknown;
}

export interface Phone {
  /** One line for the desktop: which phone, and whether it can ring. */
  describe(): string;
  /** Whether calls can reach the agent now. */
  ready(): boolean;
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
}

class Unsupported implements Phone {
  constructor(private mode: string) {}
  describe(): string {
    return `This desktop build has no ${this.mode} phone yet; use a desk phone.`;
  }
  ready(): boolean {
    return false;
  }
}

export async function loadPhone(api: Api): Promise<Phone> {
  const cfg = await api.req<SoftphoneConfig>('GET', '/v1/agent/softphone');
  if (cfg.webrtc) return new Unsupported('browser (WebRTC)');
  if (cfg.mode === 'desk_phone') return new DeskPhone(cfg);
  return new Unsupported(cfg.mode);
}
