/**
 * Short versions of the mesh scenarios that have their own scripts: scripts/mesh.sh (the compose mesh as
 * real processes, with Prometheus scraping it when installed) and bench/mesh.ts (HTTP and audio load).
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT, tempDir } from "../helpers/node-process";

function run(argv: string[], env: Record<string, string> = {}, timeoutMs = 120_000) {
  const r = Bun.spawnSync(argv, { cwd: ROOT, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

test("scripts/mesh.sh brings the 3-node mesh up until a fresh client discovers both mixers, and down again", async () => {
  const dir = tempDir("agora-mesh-");
  const env = { AGORA_MESH_DIR: dir, AGORA_MESH_HEARTBEAT: "1s" };
  try {
    const up = run(["bash", "scripts/mesh.sh", "up"], env);
    expect(up.err).toContain("mesh converged");
    expect(up.code).toBe(0);
    const status = run(["bash", "scripts/mesh.sh", "status"], env);
    expect(status.out.match(/state ready/g)?.length).toBe(3);
    if (up.err.includes("prometheus: http://127.0.0.1:9190")) {
      // Prometheus scrapes every node: wait for one scrape round (15 s interval, first scrape at start).
      let up3 = 0;
      for (let i = 0; i < 40 && up3 < 3; i++) {
        await Bun.sleep(500);
        const r = (await fetch("http://127.0.0.1:9190/api/v1/query?query=up")
          .then((x) => x.json())
          .catch(() => null)) as { data?: { result: { value: [number, string] }[] } } | null;
        up3 = r?.data?.result.filter((s) => s.value[1] === "1").length ?? 0;
      }
      expect(up3).toBe(3);
    }
  } finally {
    const down = run(["bash", "scripts/mesh.sh", "down"], env);
    expect(down.out.match(/stopped after/g)?.length).toBe(3);
  }
}, 180_000);

test("bench/mesh (short): HTTP load on every node without errors, every audio participant joined", () => {
  const r = run(
    [
      process.execPath,
      join(ROOT, "bench", "mesh.ts"),
      "--http-seconds",
      "2",
      "--concurrency",
      "4",
      "--audio-seconds",
      "4",
      "--rooms",
      "1",
      "--participants",
      "3",
    ],
    {},
    150_000,
  );
  expect(r.code).toBe(0);
  const line = r.out.trim().split("\n").pop()!;
  const j = JSON.parse(line) as {
    http: Record<string, { rps: number; errors: number }>;
    audio: Record<string, { joined: number; sessions: number; loss_percent: number }>;
  };
  expect(Object.keys(j.http)).toEqual(["bootstrap", "mixer-eu", "mixer-us"]);
  for (const h of Object.values(j.http)) {
    expect(h.errors).toBe(0);
    expect(h.rps).toBeGreaterThan(0);
  }
  for (const a of Object.values(j.audio)) {
    expect(a.joined).toBe(a.sessions);
    expect(a.sessions).toBe(3);
    expect(a.loss_percent).toBeLessThan(5);
  }
}, 180_000);
