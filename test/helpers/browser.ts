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

/** A browser context on a new profile in `userDataDir` (the caller removes the folder afterwards). */
export function launchChromium(userDataDir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: ARGS });
}

/** A browser whose contexts (browser.newContext()) each start empty. */
export function launchChromiumBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}
