// End-to-end: the desktop's Transfer button and its session-expired message, in Debian's
// headless Chromium (playwright-core). Run by tests/api/desktop_browser.rs with the browser as
// the phone (DESK_PHONE=webrtc, see common.mjs) and:
//   DESK_SHOTS        directory for the screenshots (transferred, session-expired)
//   DESK_TRANSFER_TO  what the agent types in Transfer to (a queue id, an agent, a number)
// It prints READY once the agent is ready, ANSWERED when the browser phone is in the call,
// TRANSFERRED once the transfer left the agent in wrap-up with the line free, and EXPIRED
// when, after the test revoked the agent's tokens, the page is back at the login form saying
// the session expired; it exits non-zero with the reason on any failure.

import { mkdirSync } from 'node:fs';
import { desk, env, withBrowser } from './common.mjs';

const shots = env('DESK_SHOTS');
mkdirSync(shots, { recursive: true });
const target = env('DESK_TRANSFER_TO');

await withBrowser('transfer', async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const { shot, waitState, waitFeed, waitPhone, waitText, logIn } = desk(page, shots);
  await logIn();
  await waitState('not_ready');
  await waitFeed('live');
  await waitPhone('data-registration', 'registered', 30000);
  await page.getByTestId('go-ready').click();
  await waitState('ready');
  console.log('READY');

  await waitPhone('data-line', 'ringing', 40000);
  await page.getByTestId('answer').click();
  await waitPhone('data-line', 'in_call', 15000);
  await waitState('on_call', 15000);
  console.log('ANSWERED');

  // Blind transfer: the button is enabled in a call; the page says where the caller went, the
  // gateway hangs the browser up and the agent goes to wrap-up.
  await page.getByTestId('transfer-target').fill(target);
  await page.getByTestId('transfer').click();
  await waitText('phone-notice', `Transferred to ${target}.`);
  await waitPhone('data-line', 'idle', 15000);
  await waitState('wrap_up', 15000);
  await shot('transferred');
  console.log('TRANSFERRED');

  // The test revokes the agent's tokens: the next request (the event feed's reconnection
  // within 4 s, the heartbeat) is refused, the refresh too, and the page says so.
  await page.getByTestId('login-form').waitFor({ state: 'visible', timeout: 30000 });
  await waitText('notice', 'Your session has expired. Please log in again.');
  if (await page.getByTestId('status').isVisible()) throw new Error('desk still visible after expiry');
  await shot('session-expired');
  console.log('EXPIRED');
});
