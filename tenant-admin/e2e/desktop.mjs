// End-to-end: the agent desktop in Debian's headless Chromium, driven by playwright-core.
//
// Run by the Rust tests in tests/api/desktop_browser.rs, which start the product, provision the
// tenant and place the call (sipp) when this script says READY. Two phones:
//   DESK_PHONE=desk    the agent's desk phone (sipp, registered by the test) answers;
//   DESK_PHONE=webrtc  the browser is the phone (JsSIP over the gateway's SIP over WebSocket):
//                      this script clicks Answer, types 1 2 on the keypad, mutes for 2.5 s,
//                      holds and resumes, and after the wrap-up checks that a browser whose
//                      microphone is denied says so.
// Settings come from the environment:
//   DESK_URL      http://127.0.0.1:PORT/desk/
//   DESK_TENANT, DESK_EMAIL, DESK_PASSWORD
//   (and the rest of common.mjs's)
//   DESK_CALLER   the number the screen pop must show
//   DESK_CONTACT  the contact name it must show
//   DESK_QUEUE    the queue name it must show
//   DESK_SHOTS    directory for the screenshots (idle, ringing, in call, wrap-up)
// It prints READY once the agent is ready, ANSWERED when the browser phone is in the call,
// and DONE <call id> after the wrap-up; it exits non-zero with the reason on any failure.

import { mkdirSync } from 'node:fs';
import { desk, env, launch, webrtc, withBrowser } from './common.mjs';

const shots = env('DESK_SHOTS');
mkdirSync(shots, { recursive: true });

await withBrowser('desktop', async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const { shot, waitState, waitFeed, waitPhone, waitFlag, phoneLine, logIn } = desk(page, shots);
  const status = page.getByTestId('status');

  // The browser phone's WebSocket goes through Playwright's route (it connects the page to
  // the gateway as is, `sip` subprotocol included), so the test can cut it later.
  const sipSockets = [];
  if (webrtc) {
    await page.routeWebSocket(/^wss?:\/\//, (ws) => {
      const server = ws.connectToServer();
      sipSockets.push({ ws, server });
    });
  }

  await logIn();
  await waitState('not_ready');
  await waitFeed('live');

  // The state survives a reload (refresh token in localStorage, session resumed).
  await page.reload();
  await waitState('not_ready');
  await waitFeed('live');

  // The connection drops (offline when the server ends the stream, every 4 s in this test):
  // the desktop says so, reconnects by itself and resumes.
  await page.context().setOffline(true);
  await waitFeed('reconnecting', 20000);
  const dropped = await page.getByTestId('notice').textContent();
  if (!dropped?.includes('reconnecting')) throw new Error(`no reconnecting notice: ${dropped}`);
  await shot('reconnecting');
  await page.context().setOffline(false);
  await waitFeed('live');

  if (webrtc) {
    // The browser phone registers (again, after the offline spell) with the access token.
    await page.getByTestId('phone-card').waitFor({ state: 'visible' });
    await waitPhone('data-registration', 'registered', 30000);
    const phoneText = await page.getByTestId('phone').textContent();
    if (!phoneText?.includes('Browser phone')) throw new Error(`phone line: ${phoneText}`);
    // The phone's connection drops: the page says so, reconnects and registers again.
    if (!sipSockets.length) throw new Error('the phone opened no WebSocket');
    for (const { ws, server } of sipSockets.splice(0)) {
      await server.close({ code: 4000, reason: 'test cut' });
      await ws.close({ code: 4000, reason: 'test cut' });
    }
    await waitPhone('data-registration', 'reconnecting', 10000);
    const lost = await page.getByTestId('phone-notice').textContent();
    if (!lost?.includes('Phone connection lost')) throw new Error(`no phone connection notice: ${lost}`);
    await shot('phone-reconnecting');
    await waitPhone('data-registration', 'registered', 30000);
    if (!sipSockets.length) throw new Error('the phone did not reconnect');
    const after = await page.getByTestId('phone-notice').textContent();
    if (after) throw new Error(`a stale phone notice after reconnecting: ${after}`);
  }

  await page.getByTestId('go-ready').click();
  await waitState('ready');
  await shot('idle');
  console.log('READY');

  // The call rings: the screen pop shows who it is.
  await waitState('reserved', 40000);
  const pop = page.getByTestId('screen-pop');
  await pop.waitFor({ state: 'visible' });
  await page.waitForFunction(
    (want) => document.querySelector('[data-testid=pop-caller]')?.textContent === want,
    env('DESK_CALLER'),
  );
  const contact = await page.getByTestId('pop-contact').textContent();
  const queue = await page.getByTestId('pop-queue').textContent();
  const ivr = await page.getByTestId('pop-ivr').textContent();
  if (!contact?.includes(env('DESK_CONTACT'))) throw new Error(`screen pop contact: ${contact}`);
  if (queue !== env('DESK_QUEUE')) throw new Error(`screen pop queue: ${queue}`);
  if (ivr !== 'none') throw new Error(`screen pop IVR choices: ${ivr}`);

  if (webrtc) {
    // The browser rings; the agent answers in the page.
    await waitPhone('data-line', 'ringing');
    await shot('ringing');
    await page.getByTestId('answer').click();
    try {
      await waitPhone('data-line', 'in_call', 15000);
    } catch (e) {
      const why = await page.getByTestId('phone-notice').textContent();
      throw new Error(`the browser phone did not get into the call (line ${await phoneLine('data-line')}): ${why || e.message}`);
    }
    await waitState('on_call', 15000);
    await page.waitForFunction(() => document.querySelector('[data-testid=call-title]')?.textContent === 'In call');
    await shot('in-call');
    console.log('ANSWERED');
    // Talk, then the keypad: 1 and 2 go out as SIP INFO (the caller gets RFC 4733).
    await page.waitForTimeout(2500);
    for (const key of ['1', '2']) {
      await page.locator(`[data-testid=keypad] button[data-tone="${key}"]`).click();
      await page.waitForTimeout(500);
    }
    const sent = await page.getByTestId('dtmf-sent').textContent();
    if (!sent?.includes('12')) throw new Error(`keypad: ${sent}`);
    // Mute for 2.5 s (the recording's agent channel goes silent), then talk again.
    await page.getByTestId('mute').click();
    await waitFlag('data-muted', 'true');
    await shot('muted');
    await page.waitForTimeout(2500);
    await page.getByTestId('mute').click();
    await waitFlag('data-muted', 'false');
    await page.waitForTimeout(1500);
    // Hold (re-INVITE, sendonly) and resume at once.
    await page.getByTestId('hold').click();
    await waitFlag('data-held', 'true');
    if ((await page.getByTestId('hold').textContent()) !== 'Resume') throw new Error('no Resume button on hold');
    await page.getByTestId('hold').click();
    await waitFlag('data-held', 'false');
  } else {
    await shot('ringing');
    // The desk phone answers.
    await waitState('on_call', 20000);
    await page.waitForFunction(() => document.querySelector('[data-testid=call-title]')?.textContent === 'In call');
    await shot('in-call');
  }

  // The caller hangs up: wrap-up.
  await waitState('wrap_up', 30000);
  await page.getByTestId('wrapup-form').waitFor({ state: 'visible' });
  await page.getByTestId('disposition').selectOption('sale');
  await page.getByTestId('notes').fill('Ordered two headsets; wants delivery on Friday.');
  await shot('wrap-up');
  const done = page.waitForResponse((r) => r.url().includes('/v1/agent/wrap-up'));
  await page.getByTestId('wrapup-submit').click();
  const resp = await done;
  if (resp.status() !== 200) throw new Error(`wrap-up answered ${resp.status()}: ${await resp.text()}`);
  const body = await resp.json();
  await waitState('ready');
  console.log(`DONE ${body.call_id}`);

  if (webrtc) {
    // The caller hung up: the line is free again.
    await waitPhone('data-line', 'idle');
  }

  // Log out: back to the login form.
  await page.getByTestId('logout').click();
  await page.getByTestId('login-form').waitFor({ state: 'visible' });
  if (await status.isVisible()) throw new Error('desk still visible after logout');

  if (webrtc) {
    // A browser that refuses the microphone: calling out says why, and nothing is dialled.
    const denied = await launch(false);
    try {
      const p2 = await denied.newPage();
      const d2 = desk(p2, shots, 'browser 2');
      await d2.logIn();
      await d2.waitPhone('data-registration', 'registered', 30000);
      await p2.getByTestId('dial-number').fill('+14155550123');
      await p2.getByTestId('dial').click();
      await d2.waitText('phone-notice', 'Microphone access is blocked');
      const line = await d2.phoneLine('data-line');
      if (line !== 'idle') throw new Error(`a call started without a microphone: ${line}`);
      await d2.shot('microphone-denied');
      await p2.getByTestId('logout').click();
      await p2.getByTestId('login-form').waitFor({ state: 'visible' });
    } finally {
      await denied.close();
    }
  }
});
