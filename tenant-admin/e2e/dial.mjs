// End-to-end: the desktop's click-to-call, in Debian's headless Chromium (playwright-core). Run
// by tests/api/desktop_browser.rs with the browser as the phone (DESK_PHONE=webrtc, see
// common.mjs): the browser's own JsSIP INVITE goes through the gateway to the tenant's trunk
// (sipp, started by the test), and:
//   DESK_SHOTS      directory for the screenshot (outside-call)
//   DESK_DIAL       the outside number the agent types in Call
// It prints READY once the browser phone is registered, CONNECTED <packets> when the outside
// call is up and the browser receives sound from the trunk (its WebRTC receive stats), and
// HUNG_UP once the agent's Hang up left the line idle; it exits non-zero with the reason on
// any failure.

import { mkdirSync } from 'node:fs';
import { desk, env, withBrowser } from './common.mjs';

const shots = env('DESK_SHOTS');
mkdirSync(shots, { recursive: true });
const number = env('DESK_DIAL');

/** Every RTCPeerConnection the page makes, kept for their stats (a test-only hook). */
const keepPeerConnections = () => {
  window.__pcs = [];
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
};

/** The browser's receive side of the call's audio: packets, loss and energy received so far. */
const inboundAudio = (page) =>
  page.evaluate(async () => {
    const pc = window.__pcs?.at(-1);
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()];
    for (const s of stats) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        return {
          packets: s.packetsReceived ?? 0,
          lost: s.packetsLost ?? 0,
          energy: s.totalAudioEnergy ?? 0,
          level: s.audioLevel ?? 0,
          codec: s.codecId ?? '',
        };
      }
    }
    return null;
  });

await withBrowser('dial', async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.addInitScript(keepPeerConnections);
  const { shot, waitState, waitFeed, waitPhone, phoneLine, logIn } = desk(page, shots);
  await logIn();
  await waitState('not_ready');
  await waitFeed('live');
  await waitPhone('data-registration', 'registered', 30000);
  console.log('READY');

  // The agent types the number and clicks Call: the line calls, then the trunk answers.
  await page.getByTestId('dial-number').fill(number);
  await page.getByTestId('dial').click();
  try {
    await waitPhone('data-line', 'in_call', 20000);
  } catch (e) {
    const why = await page.getByTestId('phone-notice').textContent();
    throw new Error(`the outside call did not connect (line ${await phoneLine('data-line')}): ${why || e.message}`);
  }
  const peer = await page.getByTestId('line-peer').textContent();
  if (peer !== number) throw new Error(`the line shows ${peer}, not the dialled ${number}`);
  if (!(await page.getByTestId('hangup').isEnabled())) throw new Error('Hang up is disabled in the call');

  // The page receives the trunk's audio: RTP keeps arriving, with sound in it (the trunk
  // plays a tone; the Rust side checks it is the trunk's).
  // (No stats before the first packet: count from zero then.)
  const first = (await inboundAudio(page)) ?? { packets: 0, energy: 0 };
  await page.waitForTimeout(3000);
  const heard = await inboundAudio(page);
  console.error(`inbound audio ${JSON.stringify(first)} then ${JSON.stringify(heard)}`);
  if (!heard) throw new Error('the page has no inbound audio stream');
  if (heard.packets - first.packets < 100) {
    throw new Error(`the page received ${heard.packets - first.packets} audio packets in 3 s`);
  }
  if (!(heard.energy > first.energy) || !(heard.level > 0.01)) {
    throw new Error(`the page's received audio is silent: ${JSON.stringify(heard)}`);
  }
  await shot('outside-call');
  console.log(`CONNECTED ${heard.packets}`);

  // Talk a while (the trunk hears the fake microphone), then the agent hangs up.
  await page.waitForTimeout(4000);
  await page.getByTestId('hangup').click();
  await waitPhone('data-line', 'idle', 10000);
  const notice = await page.getByTestId('phone-notice').textContent();
  if (notice) throw new Error(`a phone notice after a normal hang-up: ${notice}`);
  console.log('HUNG_UP');
});
