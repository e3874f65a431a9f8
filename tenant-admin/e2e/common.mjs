// What the desktop's browser scripts share: settings from the environment, Chromium with a fake
// microphone, and the page's test hooks (data-testid, data-state, data-line ...).
//   DESK_URL, DESK_TENANT, DESK_EMAIL, DESK_PASSWORD   where and who logs in
//   DESK_PHONE=webrtc   the browser is the phone (JsSIP, WebRTC): DESK_TONE_WAV is what
//                       Chromium's fake microphone plays
//   CHROMIUM            the browser (default /usr/bin/chromium)

import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

export const webrtc = process.env.DESK_PHONE === 'webrtc';
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

// A fake microphone and camera; with `grantMic` the permission prompt is accepted, without it
// the page is refused the microphone (as when the agent says no). The rest lets WebRTC reach
// the gateway on loopback (host candidates, no mDNS names) and play audio without a click.
export const launch = (grantMic) => {
  const args = ['--use-fake-device-for-media-stream', '--no-sandbox'];
  if (grantMic) args.push('--use-fake-ui-for-media-stream');
  if (webrtc) {
    args.push(
      `--use-file-for-fake-audio-capture=${env('DESK_TONE_WAV')}`,
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
    );
  }
  return chromium.launch({ executablePath: chromiumPath, headless: true, args });
};

/**
 * Launches a browser with the microphone granted, runs `steps(browser)`, closes the browser and
 * exits: 0, or 1 after printing why `name`'s steps failed (the Rust test reads both).
 */
export async function withBrowser(name, steps) {
  const browser = await launch(true);
  let failed = false;
  try {
    await steps(browser);
  } catch (e) {
    failed = true;
    console.error(`${name} e2e failed: ${e?.stack ?? e}`);
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}

/** The desktop's test hooks on `page`; screenshots go to `shots`. */
export function desk(page, shots, label = 'browser') {
  page.on('console', (m) => console.error(`[${label} ${m.type()}] ${m.text()}`));
  const attrIs = ([sel, a, w]) => document.querySelector(`[data-testid=${sel}]`)?.getAttribute(a) === w;
  return {
    shot: async (name) => {
      const path = join(shots, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      console.error(`screenshot ${path}`);
    },
    /** The agent's state badge shows `s`. */
    waitState: (s, timeout = 30000) => page.waitForFunction(attrIs, ['status', 'data-state', s], { timeout }),
    /** The live feed's badge shows `s` (live, reconnecting). */
    waitFeed: (s, timeout = 30000) => page.waitForFunction(attrIs, ['connection', 'data-status', s], { timeout }),
    /** The browser phone's line attribute `attr` (data-line, data-registration) is `want`. */
    waitPhone: (attr, want, timeout = 20000) => page.waitForFunction(attrIs, ['line', attr, want], { timeout }),
    /** The line's flag `flag` (data-held, data-muted) is `want`. */
    waitFlag: (flag, want, timeout = 10000) => page.waitForFunction(attrIs, ['line-flags', flag, want], { timeout }),
    phoneLine: (attr) =>
      page.evaluate((a) => document.querySelector('[data-testid=line]')?.getAttribute(a) ?? null, attr),
    /** Waits until the element `sel` contains `text`. */
    waitText: (sel, text, timeout = 10000) =>
      page.waitForFunction(
        ([s, t]) => document.querySelector(`[data-testid=${s}]`)?.textContent?.includes(t),
        [sel, text],
        { timeout },
      ),
    /** Opens the desktop and logs in with the environment's agent. */
    logIn: async () => {
      await page.goto(env('DESK_URL'));
      await page.getByTestId('tenant').fill(env('DESK_TENANT'));
      await page.getByTestId('email').fill(env('DESK_EMAIL'));
      await page.getByTestId('password').fill(env('DESK_PASSWORD'));
      await page.getByTestId('login').click();
    },
  };
}
