// End-to-end: the agent desktop in Debian's headless Chromium, driven by playwright-core.
//
// Run by the Rust test tests/api/desktop_browser.rs, which starts the product, provisions the
// tenant, registers the agent's desk phone (sipp) and places the call when this script says
// READY. Settings come from the environment:
//   DESK_URL      http://127.0.0.1:PORT/desk/
//   DESK_TENANT, DESK_EMAIL, DESK_PASSWORD
//   DESK_CALLER   the number the screen pop must show
//   DESK_CONTACT  the contact name it must show
//   DESK_QUEUE    the queue name it must show
//   DESK_SHOTS    directory for the screenshots (idle, ringing, in call, wrap-up)
//   CHROMIUM      the browser (default /usr/bin/chromium)
// It prints READY once the agent is ready, and DONE <call id> after the wrap-up; it exits
// non-zero with the reason on any failure.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const shots = env('DESK_SHOTS');
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // The softphone part will need these; harmless for the desk phone.
  args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('console', (m) => console.error(`[browser ${m.type()}] ${m.text()}`));
  const shot = async (name) => {
    const path = join(shots, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.error(`screenshot ${path}`);
  };
  const status = page.getByTestId('status');
  const waitState = (s, timeout = 30000) =>
    page.waitForFunction(
      (want) => document.querySelector('[data-testid=status]')?.getAttribute('data-state') === want,
      s,
      { timeout },
    );

  await page.goto(env('DESK_URL'));
  await page.getByTestId('tenant').fill(env('DESK_TENANT'));
  await page.getByTestId('email').fill(env('DESK_EMAIL'));
  await page.getByTestId('password').fill(env('DESK_PASSWORD'));
  await page.getByTestId('login').click();
  await waitState('not_ready');
  await page.waitForFunction(() => document.querySelector('[data-testid=connection]')?.getAttribute('data-status') === 'live');

  // The state survives a reload (refresh token in localStorage, session resumed).
  await page.reload();
  await waitState('not_ready');
  await page.waitForFunction(() => document.querySelector('[data-testid=connection]')?.getAttribute('data-status') === 'live');

  // The connection drops (offline when the server ends the stream, every 4 s in this test):
  // the desktop says so, reconnects by itself and resumes.
  await page.context().setOffline(true);
  await page.waitForFunction(
    () => document.querySelector('[data-testid=connection]')?.getAttribute('data-status') === 'reconnecting',
    null,
    { timeout: 20000 },
  );
  const dropped = await page.getByTestId('notice').textContent();
  if (!dropped?.includes('reconnecting')) throw new Error(`no reconnecting notice: ${dropped}`);
  await shot('reconnecting');
  await page.context().setOffline(false);
  await page.waitForFunction(
    () => document.querySelector('[data-testid=connection]')?.getAttribute('data-status') === 'live',
    null,
    { timeout: 30000 },
  );

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
  await shot('ringing');

  // The desk phone answers.
  await waitState('on_call', 20000);
  await page.waitForFunction(() => document.querySelector('[data-testid=call-title]')?.textContent === 'In call');
  await shot('in-call');

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

  // Log out: back to the login form.
  await page.getByTestId('logout').click();
  await page.getByTestId('login-form').waitFor({ state: 'visible' });
  if (await status.isVisible()) throw new Error('desk still visible after logout');
} catch (e) {
  failed = true;
  console.error(`desktop e2e failed: ${e?.stack ?? e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
