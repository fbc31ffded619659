/** dashboard.cors_origins is live: the compiled node picks up a changed list on SIGHUP without a restart. */
import { afterAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually, type NodeHandle, startNode, tempDir } from "../helpers/node-process";

let h: NodeHandle | undefined;
afterAll(() => h?.cleanup());

test("SIGHUP opens and closes the read-only API to an origin", async () => {
  const dir = tempDir();
  const file = join(dir, "node.toml");
  const origin = "https://directory.example.org";
  writeFileSync(file, `[dashboard]\ncors_origins = []\n`);
  h = await startNode({ args: ["--config", file], dataDir: dir });
  const node = h;
  const allowOrigin = async () =>
    (await fetch(`${node.dashboardUrl}/api/status`, { headers: { origin } })).headers.get("access-control-allow-origin");
  expect(await allowOrigin()).toBeNull();
  writeFileSync(file, `[dashboard]\ncors_origins = ["${origin}"]\n`);
  node.proc.kill("SIGHUP");
  await eventually(async () => (await allowOrigin()) === origin, 10_000, "the origin allowed after SIGHUP");
  expect(node.logs()).not.toContain("changed keys need a restart");
  writeFileSync(file, `[dashboard]\ncors_origins = []\n`);
  node.proc.kill("SIGHUP");
  await eventually(async () => (await allowOrigin()) === null, 10_000, "the origin refused after SIGHUP");
  // A refused preflight is counted.
  const pre = await fetch(`${node.dashboardUrl}/api/status`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "GET" },
  });
  expect(pre.status).toBe(403);
  expect(await (await fetch(node.metricsUrl)).text()).toContain('agora_http_cors_refused_total{reason="origin"} 1');
}, 40_000);
