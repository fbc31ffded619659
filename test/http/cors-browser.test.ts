/**
 * CORS in a real browser (Debian's chromium driven by playwright-core): a page served from another origin (a
 * second tiny server on another 127.0.0.1 port) reads the node's /api/discover only when its origin is listed
 * in dashboard.cors_origins, and can never open a mutating endpoint.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import type { BrowserContext } from "playwright-core";
import { launchChromium } from "../helpers/browser";
import { freePort, type NodeHandle, startNode, tempDir } from "../helpers/node-process";

let browser: BrowserContext;
let node: NodeHandle;
let userDataDir: string;
const pages: ReturnType<typeof Bun.serve>[] = [];

/** A page that fetches `path` on the node and writes what it got (or the browser's error) into #out. */
function pageServer(port: number, nodeUrl: string) {
  return Bun.serve({
    hostname: "127.0.0.1",
    port,
    fetch: () =>
      new Response(
        `<!doctype html><title>directory</title><pre id="out">pending</pre><script>
          async function read(path, init) {
            try { const r = await fetch(${JSON.stringify(nodeUrl)} + path, init); return r.status + " " + (await r.text()); }
            catch (e) { return "blocked " + e.name; }
          }
          window.results = (async () => ({
            discover: await read("/api/discover"),
            reload: await read("/api/reload", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
          }))();
          window.results.then((r) => { document.getElementById("out").textContent = JSON.stringify(r); });
        </script>`,
        { headers: { "content-type": "text/html; charset=utf-8" } },
      ),
  });
}

let allowedUrl: string;
let otherUrl: string;

beforeAll(async () => {
  const [allowedPort, otherPort] = [await freePort(), await freePort()];
  allowedUrl = `http://127.0.0.1:${allowedPort}`;
  otherUrl = `http://127.0.0.1:${otherPort}`;
  node = await startNode({ env: { AGORA_DASHBOARD_CORS_ORIGINS: allowedUrl } });
  pages.push(pageServer(allowedPort, node.dashboardUrl), pageServer(otherPort, node.dashboardUrl));
  userDataDir = tempDir("agora-chromium-");
  // A fresh profile: nothing cached from another run (a cached preflight would hide a regression).
  browser = await launchChromium(userDataDir);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  for (const p of pages) p.stop(true);
  node?.cleanup();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

async function resultsFrom(url: string): Promise<{ discover: string; reload: string }> {
  const page = await browser.newPage();
  try {
    await page.goto(url);
    return await page.evaluate(() => (window as unknown as { results: Promise<{ discover: string; reload: string }> }).results);
  } finally {
    await page.close();
  }
}

test("a page on a listed origin reads /api/discover; a mutating endpoint stays closed to it", async () => {
  const r = await resultsFrom(allowedUrl);
  expect(r.discover).toMatch(/^200 \[/);
  // POST with a JSON body needs a preflight, which the node refuses for /api/reload.
  expect(r.reload).toBe("blocked TypeError");
}, 30_000);

test("a page on an unlisted origin cannot read /api/discover", async () => {
  const r = await resultsFrom(otherUrl);
  expect(r.discover).toBe("blocked TypeError");
  expect(r.reload).toBe("blocked TypeError");
}, 30_000);
