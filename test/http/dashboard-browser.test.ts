/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core): what a person sees,
 * the auto-refresh, the login flow with a token; screenshots kept under test-output/.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { launchChromiumBrowser } from "../helpers/browser";
import { type NodeHandle, ROOT, startNode } from "../helpers/node-process";

const OUT = join(ROOT, "test-output");
const TOKEN = "browser-token-0123456789";
let browser: Browser;
let open: NodeHandle;
let locked: NodeHandle;
let frozen: NodeHandle;

beforeAll(async () => {
  mkdirSync(OUT, { recursive: true });
  [open, locked, frozen] = await Promise.all([
    startNode({ args: ["--region", "eu-west"] }),
    startNode({ env: { AGORA_DASHBOARD_AUTH_TOKEN: TOKEN } }),
    startNode(),
  ]);
  browser = await launchChromiumBrowser();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  open?.cleanup();
  locked?.cleanup();
  if (frozen) {
    frozen.proc.kill("SIGCONT");
    frozen.cleanup();
  }
});

test("a person sees state, mode, uptime, peers, rooms, load and charts; it refreshes by itself", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const external: string[] = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(open.dashboardUrl)) external.push(r.url());
  });
  await page.goto(open.dashboardUrl);
  await expect(page.title()).resolves.toContain("agora-node");
  expect(await page.locator("#state").innerText()).toBe("ready");
  const text = await page.locator("main").innerText();
  for (const s of ["STATE", "MODE", "UPTIME", "PEERS", "ROOMS", "LOAD", "dedicated", "mixer", "eu-west", "No active rooms."])
    expect(text).toContain(s);
  expect(await page.locator("#peer-id").innerText()).toBe(await open.peerId());
  expect(await page.locator("figure.chart svg").count()).toBe(4);
  // The inline script re-fetches the live part every 3 s.
  await page.waitForFunction(() => document.getElementById("refreshed")?.textContent?.startsWith("updated"), undefined, {
    timeout: 10_000,
  });
  // Once two samples exist, every chart draws its line (the history is sampled every 2 s).
  await page.waitForFunction(() => document.querySelectorAll("figure.chart polyline").length === 4, undefined, { timeout: 15_000 });
  await page.screenshot({ path: join(OUT, "dashboard.png"), fullPage: true });
  expect(external).toEqual([]);
  await page.close();
}, 30_000);

test("with a token, a browser signs in through the form", async () => {
  const page = await browser.newPage();
  await page.goto(locked.dashboardUrl);
  expect(page.url()).toBe(`${locked.dashboardUrl}/login`);
  await page.fill("input[name=token]", "wrong-token-wrong-token");
  await page.click("button[type=submit]");
  expect(await page.content()).toContain("That token is not valid.");
  await page.fill("input[name=token]", TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("#state");
  expect(await page.locator("#state").innerText()).toBe("ready");
  await page.screenshot({ path: join(OUT, "dashboard-login.png") });
  await page.close();
}, 30_000);

test("a node that stops answering turns the page visibly stale; it recovers when the node answers again", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(frozen.dashboardUrl);
  expect(await page.locator("#state").innerText()).toBe("ready");
  expect(await page.locator("#stale").isVisible()).toBe(false);
  await page.waitForFunction(() => document.getElementById("refreshed")?.textContent?.startsWith("updated"), undefined, {
    timeout: 10_000,
  });
  // SIGSTOP: the process holds its sockets but answers nothing, like a hung node.
  frozen.proc.kill("SIGSTOP");
  await page.waitForFunction(() => document.body.classList.contains("stale"), undefined, { timeout: 30_000 });
  expect(await page.locator("#stale").isVisible()).toBe(true);
  expect(await page.locator("#stale").innerText()).toMatch(/^No answer from the node for \d+ s/);
  expect(await page.locator("#state").innerText()).toBe("no answer");
  await page.screenshot({ path: join(OUT, "dashboard-stale.png"), fullPage: true });
  frozen.proc.kill("SIGCONT");
  await page.waitForFunction(() => !document.body.classList.contains("stale"), undefined, { timeout: 30_000 });
  expect(await page.locator("#state").innerText()).toBe("ready");
  expect(await page.locator("#stale").isVisible()).toBe(false);
  await page.close();
}, 90_000);
