// The agent desktop: log in, own state, ready / not ready, screen pop when a call is offered,
// the browser phone (answer, hang up, hold, mute, keypad, transfer, outside calls) when the
// api says the desktop is the phone, wrap-up with a disposition and notes, log out. Plain
// TypeScript and DOM.

import { Api, ApiError, SessionExpired } from './api';
import { EventFeed, FeedEvent, FeedStatus, Hello } from './events';
import { BrowserPhone, Phone, loadPhone } from './softphone';

const CONNECTION_KEY = 'switchboard.connection';

interface AgentView {
  agent: string;
  status: string;
  reason: string | null;
  call: string | null;
  since_ms: number;
}

interface Me {
  id: string;
  email: string;
  display_name: string;
}

interface ScreenPop {
  call_id: string;
  caller: string | null;
  status: string;
  queue: { id: string; name: string } | null;
  wait_ms: number | null;
  ivr_choices: { menu: string; choice: string }[];
  contact: { name: string; company: string; notes: string } | null;
  recent_calls: { started_at: string; talk_ms: number; hangup_cause: string; disposition: string | null }[];
}

interface Code {
  code: string;
  label: string;
  active: boolean;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const api = new Api();
let me: Me | null = null;
let state: AgentView | null = null;
let popCall: string | null = null;
let wrapCall: string | null = null;
let heartbeat: number | undefined;
let sinceTimer: number | undefined;
let phone: Phone | null = null;

const STATUS_TEXT: Record<string, string> = {
  logged_out: 'Logged out',
  ready: 'Ready',
  not_ready: 'Not ready',
  reserved: 'Ringing',
  on_call: 'On a call',
  wrap_up: 'Wrap-up',
};

function notice(text: string | null, bad = false): void {
  const n = $('notice');
  n.hidden = !text;
  n.textContent = text ?? '';
  n.classList.toggle('bad', bad);
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function connectionId(): string {
  let id = localStorage.getItem(CONNECTION_KEY);
  if (!id) {
    id = `web-${crypto.randomUUID().replaceAll('-', '')}`;
    localStorage.setItem(CONNECTION_KEY, id);
  }
  return id;
}

function renderState(): void {
  const s = state?.status ?? 'logged_out';
  const el = $('status');
  el.textContent = STATUS_TEXT[s] ?? s;
  el.className = `status ${s}`;
  el.dataset.state = s;
  $('reason').textContent = s === 'not_ready' && state?.reason ? `(${state.reason})` : '';
  ($('go-ready') as HTMLButtonElement).disabled = !['not_ready', 'wrap_up'].includes(s);
  ($('go-not-ready') as HTMLButtonElement).disabled = !['ready', 'not_ready', 'wrap_up'].includes(s);
  window.clearInterval(sinceTimer);
  const tick = () => {
    $('since').textContent = state ? `for ${duration(Date.now() - state.since_ms)}` : '';
  };
  tick();
  sinceTimer = window.setInterval(tick, 1000);

  const call = state?.call ?? null;
  if (call && ['reserved', 'on_call', 'wrap_up'].includes(s)) {
    if (popCall !== call) void showPop(call);
    $('call-title').textContent =
      s === 'reserved' ? 'Incoming call' : s === 'on_call' ? 'In call' : 'Call ended';
  } else if (s === 'ready' || s === 'not_ready' || s === 'logged_out') {
    $('call-card').hidden = true;
    popCall = null;
  }
  if (s === 'wrap_up' && call) {
    if (wrapCall !== call) {
      wrapCall = call;
      ($('notes') as HTMLTextAreaElement).value = '';
      $('wrapup-error').textContent = '';
    }
    $('wrapup').hidden = false;
  } else {
    $('wrapup').hidden = true;
    wrapCall = null;
  }
}

async function showPop(call: string): Promise<void> {
  popCall = call;
  try {
    const pop = await api.req<ScreenPop>('GET', `/v1/agent/screen-pop?call_id=${encodeURIComponent(call)}`);
    if (popCall !== call) return;
    $('pop-caller').textContent = pop.caller ?? 'unknown number';
    $('pop-contact').textContent = pop.contact
      ? [pop.contact.name, pop.contact.company].filter(Boolean).join(', ') +
        (pop.contact.notes ? ` — ${pop.contact.notes}` : '')
      : 'not in the contact book';
    $('pop-queue').textContent = pop.queue?.name ?? '—';
    $('pop-wait').textContent = pop.wait_ms === null ? '—' : duration(pop.wait_ms);
    $('pop-ivr').textContent = pop.ivr_choices.length
      ? pop.ivr_choices.map((c) => `${c.menu}: ${c.choice}`).join(', ')
      : 'none';
    const body = $('pop-recent');
    body.replaceChildren();
    for (const r of pop.recent_calls) {
      const tr = document.createElement('tr');
      for (const text of [
        new Date(r.started_at).toLocaleString(),
        duration(r.talk_ms),
        r.disposition ?? r.hangup_cause,
      ]) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      body.append(tr);
    }
    if (!pop.recent_calls.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 3;
      td.textContent = 'first call from this number';
      tr.append(td);
      body.append(tr);
    }
    $('call-card').hidden = false;
  } catch (e) {
    if (e instanceof SessionExpired) return;
    notice(`Could not load the caller's details: ${(e as Error).message}`, true);
  }
}

const LINE_TEXT: Record<string, string> = {
  idle: 'No call',
  ringing: 'Ringing',
  calling: 'Calling…',
  in_call: 'In call',
};

function renderPhone(): void {
  if (!phone) return;
  $('phone').textContent = phone.describe();
  const browser = phone instanceof BrowserPhone ? phone : null;
  $('phone-card').hidden = !browser;
  if (!browser) return;
  const line = $('line');
  line.textContent = LINE_TEXT[browser.line] ?? browser.line;
  line.className = `status ${browser.line}`;
  line.dataset.line = browser.line;
  line.dataset.registration = browser.registration;
  $('line-peer').textContent = browser.line === 'idle' ? '' : browser.peer;
  const flags = [browser.held ? 'on hold' : '', browser.muted ? 'muted' : ''].filter(Boolean);
  $('line-flags').textContent = flags.length ? `(${flags.join(', ')})` : '';
  $('line-flags').dataset.held = String(browser.held);
  $('line-flags').dataset.muted = String(browser.muted);
  const inCall = browser.line === 'in_call';
  if (browser.line === 'idle' || browser.line === 'ringing') {
    $('dtmf-sent').dataset.digits = '';
    $('dtmf-sent').textContent = '';
  }
  ($('answer') as HTMLButtonElement).disabled = browser.line !== 'ringing';
  ($('hangup') as HTMLButtonElement).disabled = browser.line === 'idle';
  ($('hold') as HTMLButtonElement).disabled = !inCall;
  $('hold').textContent = browser.held ? 'Resume' : 'Hold';
  ($('mute') as HTMLButtonElement).disabled = !inCall;
  $('mute').textContent = browser.muted ? 'Unmute' : 'Mute';
  for (const b of $('keypad').querySelectorAll('button')) b.disabled = !inCall;
  ($('transfer').querySelector('button') as HTMLButtonElement).disabled = !inCall;
  ($('dial').querySelector('button') as HTMLButtonElement).disabled =
    browser.line !== 'idle' || !browser.ready();
}

function phoneNotice(text: string | null, bad: boolean): void {
  const n = $('phone-notice');
  n.textContent = text ?? '';
  n.classList.toggle('error', bad);
  n.classList.toggle('muted', !bad);
}

function logEvent(e: FeedEvent): void {
  const li = document.createElement('li');
  const what = e.type === 'agent_state' ? `${e.from} → ${e.to}` : String(e.call ?? '');
  li.textContent = `${new Date(e.at_ms).toLocaleTimeString()} ${e.type} ${what}`;
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 30) list.lastElementChild?.remove();
}

function onEvent(e: FeedEvent): void {
  logEvent(e);
  if (!me) return;
  if (e.type === 'agent_state' && e.agent === me.id) {
    state = {
      agent: me.id,
      status: String(e.to),
      reason: (e.reason as string | null) ?? null,
      call: (e.call as string | null) ?? null,
      since_ms: e.at_ms,
    };
    renderState();
  } else if (e.type === 'call_offered' && e.agent === me.id) {
    void showPop(String(e.call));
  }
}

function onHello(h: Hello): void {
  if (h.state) {
    state = h.state as AgentView;
    renderState();
  }
}

function onStatus(s: FeedStatus, attempt: number): void {
  const c = $('conn');
  c.hidden = false;
  c.className = `badge ${s}`;
  c.dataset.status = s;
  c.textContent = s === 'live' ? 'Live' : s === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  if (s === 'reconnecting') {
    notice(`Connection to the server lost — reconnecting (attempt ${attempt})…`, true);
  } else if (s === 'live') {
    notice(null);
  }
}

const feed = new EventFeed(api, onEvent, onHello, onStatus);

async function startSession(): Promise<void> {
  const s = await api.req<{ state: AgentView | null; presence_ttl_ms: number }>('POST', '/v1/agent/session', {
    connection: connectionId(),
  });
  state = s.state;
  renderState();
  window.clearInterval(heartbeat);
  heartbeat = window.setInterval(async () => {
    try {
      await api.req('POST', '/v1/agent/heartbeat', { connection: connectionId() });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        // The engine forgot us (presence expired, another tab took over): log in again.
        await startSession().catch(() => {});
      } else if (!(e instanceof SessionExpired)) {
        notice('Cannot reach the server — your session may time out.', true);
      }
    }
  }, Math.max(2000, Math.floor(s.presence_ttl_ms / 3)));
}

async function loadCodes(): Promise<void> {
  const page = await api.req<{ items: Code[] }>('GET', '/v1/disposition-codes?limit=200');
  const sel = $('disposition') as HTMLSelectElement;
  sel.replaceChildren();
  for (const c of page.items.filter((c) => c.active)) {
    const o = document.createElement('option');
    o.value = c.code;
    o.textContent = c.label;
    sel.append(o);
  }
}

async function showDesk(): Promise<void> {
  me = await api.req<Me>('GET', '/v1/me');
  $('who').textContent = me.display_name;
  $('login').hidden = true;
  $('desk').hidden = false;
  $('logout').hidden = false;
  await startSession();
  await loadCodes();
  phone?.stop();
  phone = await loadPhone(api, { changed: renderPhone, message: phoneNotice }, $('remote-audio') as HTMLAudioElement);
  renderPhone();
  feed.start();
}

function showLogin(message?: string): void {
  feed.stop();
  phone?.stop();
  phone = null;
  $('phone-card').hidden = true;
  phoneNotice(null, false);
  window.clearInterval(heartbeat);
  me = null;
  state = null;
  $('desk').hidden = true;
  $('logout').hidden = true;
  $('conn').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  if (message) notice(message, true);
}

api.onExpired = () => showLogin('Your session has expired. Please log in again.');

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target as HTMLFormElement);
  $('login-error').textContent = '';
  try {
    await api.login(String(f.get('tenant')), String(f.get('email')), String(f.get('password')));
    notice(null);
    await showDesk();
  } catch (e) {
    $('login-error').textContent =
      e instanceof ApiError && e.status === 401 ? 'Wrong company, email or password.' : (e as Error).message;
  }
});

async function setState(body: object): Promise<void> {
  try {
    state = await api.req<AgentView>('PUT', '/v1/agent/state', body);
    renderState();
  } catch (e) {
    if (!(e instanceof SessionExpired)) notice((e as Error).message, true);
  }
}

$('go-ready').addEventListener('click', () => void setState({ state: 'ready' }));
$('go-not-ready').addEventListener('click', () =>
  void setState({ state: 'not_ready', reason: ($('reason-select') as HTMLSelectElement).value }),
);

$('wrapup').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!wrapCall) return;
  try {
    const done = await api.req<{ state: AgentView | null }>('POST', '/v1/agent/wrap-up', {
      call_id: wrapCall,
      disposition: ($('disposition') as HTMLSelectElement).value,
      notes: ($('notes') as HTMLTextAreaElement).value,
    });
    state = done.state;
    renderState();
    notice('Wrap-up saved.');
  } catch (e) {
    if (!(e instanceof SessionExpired)) $('wrapup-error').textContent = (e as Error).message;
  }
});

function browserPhone(): BrowserPhone | null {
  return phone instanceof BrowserPhone ? phone : null;
}

$('answer').addEventListener('click', () => void browserPhone()?.answer());
$('hangup').addEventListener('click', () => browserPhone()?.hangUp());
$('hold').addEventListener('click', () => browserPhone()?.toggleHold());
$('mute').addEventListener('click', () => browserPhone()?.toggleMute());
$('keypad').addEventListener('click', (ev) => {
  const tone = (ev.target as HTMLElement).dataset?.tone;
  const p = browserPhone();
  if (!tone || !p || p.line !== 'in_call') return;
  p.dtmf(tone);
  const sent = $('dtmf-sent');
  sent.dataset.digits = (sent.dataset.digits ?? '') + tone;
  sent.textContent = `Keys sent: ${sent.dataset.digits}`;
});

// Blind transfer through the api (POST /v1/agent/transfer), as for a desk phone: the gateway
// holding the call moves the caller to the queue, agent or number, whichever phone the agent
// has, and the dial policy applies to numbers.
$('transfer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = ($('transfer') as HTMLFormElement).elements.namedItem('target') as HTMLInputElement;
  const target = input.value.trim();
  if (!target) return;
  try {
    await api.req('POST', '/v1/agent/transfer', { target });
    phoneNotice(`Transferred to ${target}.`, false);
    input.value = '';
  } catch (e) {
    if (!(e instanceof SessionExpired)) phoneNotice(`Transfer failed: ${(e as Error).message}`, true);
  }
});

$('dial').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = ($('dial') as HTMLFormElement).elements.namedItem('number') as HTMLInputElement;
  void browserPhone()?.dial(input.value.trim());
});

$('logout').addEventListener('click', async () => {
  try {
    await api.req('DELETE', '/v1/agent/session');
  } catch {
    // Logged out anyway below; presence expires on its own.
  }
  await api.logout().catch(() => {});
  showLogin();
});

async function boot(): Promise<void> {
  if (!api.hasSession()) {
    showLogin();
    return;
  }
  try {
    await showDesk();
  } catch (e) {
    if (!(e instanceof SessionExpired)) showLogin(`Could not start: ${(e as Error).message}`);
  }
}

void boot();
