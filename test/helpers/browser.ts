/**
 * Debian's Chromium for the browser tests, started the way this machine needs: headless as root, and with
 * every background connection off (this workplace has no network; Chromium's own traffic would be refused
 * many times at start). Always a fresh profile, so nothing cached by an earlier run (a preflight, a page)
 * can hide a regression.
 */
import { type Browser, type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface ChromiumOptions {
  /**
   * A fake microphone: getUserMedia is granted without a prompt and captures this WAV (16-bit PCM, looped);
   * audio may play without a user gesture.
   */
  fakeAudioCapture?: string;
}

function argsFor(opts: ChromiumOptions): string[] {
  if (!opts.fakeAudioCapture) return ARGS;
  return [
    ...ARGS,
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${opts.fakeAudioCapture}`,
    "--autoplay-policy=no-user-gesture-required",
  ];
}

/** A browser context on a new profile in `userDataDir` (the caller removes the folder afterwards). */
export function launchChromium(userDataDir: string, opts: ChromiumOptions = {}): Promise<BrowserContext> {
  return chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: argsFor(opts) });
}

/** A browser whose contexts (browser.newContext()) each start empty. */
export function launchChromiumBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}
