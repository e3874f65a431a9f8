// The live event feed: Server-Sent Events from /v1/events/stream, resumed after every drop.
//
// EventSource cannot send an Authorization header, so each connection starts with a
// short-lived stream ticket (POST /v1/events/ticket). The browser's own reconnect would reuse
// the expired ticket, so on any error this module closes the source itself, waits (1 s,
// doubling to 15 s), takes a new ticket and reconnects with `after=<last event id>`: nothing
// is missed as long as the server still holds the log.

import { Api } from './api';

export type FeedStatus = 'connecting' | 'live' | 'reconnecting';

export interface FeedEvent {
  id: string;
  at_ms: number;
  type: string;
  [k: string]: unknown;
}

export interface Hello {
  scope: 'agent' | 'tenant';
  state: unknown;
}

export class EventFeed {
  private source: EventSource | null = null;
  private lastId: string | null = null;
  private attempt = 0;
  private timer: number | undefined;
  private stopped = false;

  constructor(
    private api: Api,
    private onEvent: (e: FeedEvent) => void,
    private onHello: (h: Hello) => void,
    private onStatus: (s: FeedStatus, attempt: number) => void,
  ) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.onStatus(this.attempt === 0 ? 'connecting' : 'reconnecting', this.attempt);
    let ticket: string;
    try {
      ticket = (await this.api.req<{ ticket: string }>('POST', '/v1/events/ticket')).ticket;
    } catch {
      this.retry();
      return;
    }
    const q = new URLSearchParams({ ticket });
    if (this.lastId) q.set('after', this.lastId);
    const source = new EventSource(`/v1/events/stream?${q}`);
    this.source = source;
    source.addEventListener('hello', (m) => {
      this.attempt = 0;
      this.onStatus('live', 0);
      this.onHello(JSON.parse((m as MessageEvent).data) as Hello);
    });
    source.addEventListener('bye', () => {
      // The server ended the stream (its lifetime): reconnect at once.
      source.close();
      void this.connect();
    });
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (m) => {
        const msg = m as MessageEvent;
        if (msg.lastEventId) this.lastId = msg.lastEventId;
        this.onEvent(JSON.parse(msg.data) as FeedEvent);
      });
    }
    source.onerror = () => {
      source.close();
      if (this.source === source) this.retry();
    };
  }

  private retry(): void {
    if (this.stopped) return;
    this.attempt += 1;
    this.onStatus('reconnecting', this.attempt);
    const wait = Math.min(15000, 1000 * 2 ** Math.min(this.attempt - 1, 4));
    this.timer = window.setTimeout(() => void this.connect(), wait);
  }
}

const EVENT_TYPES = [
  'agent_state',
  'call_queued',
  'call_offered',
  'offer_released',
  'call_answered',
  'call_ended',
  'call_overflowed',
  'member_changed',
  'queue_configured',
  'recording.completed',
  'recording.failed',
];
