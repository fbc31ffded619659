/**
 * Integration: every live key of the schema, end to end. The key is changed in the config file, the node
 * gets SIGHUP, and the change is observed in what the node does (its log, its API, its limits, its drain,
 * its auth) — not only in the config it reports. Also: SIGHUP reopens the log file (logrotate).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { SCHEMA } from "../../src/config";
import { LIVE_EFFECTS } from "../../src/node/runtime";
import { BINARY, eventually, type NodeHandle, runCli, startNode, tempDir } from "../helpers/node-process";

const started: NodeHandle[] = [];
const holders: Subprocess[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
  for (const p of holders) p.kill("SIGKILL");
});

const TOKEN_A = "token-a-0123456789abcdef";
const TOKEN_B = "token-b-0123456789abcdef";

function jsonLines(text: string): Record<string, any>[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l));
}

async function api(h: NodeHandle, path: string, token: string): Promise<Response> {
  return fetch(`${h.dashboardUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
}

describe("live keys", () => {
  test("every key the schema marks live has a live effect, and only those", () => {
    const live = SCHEMA.filter((s) => s.live)
      .map((s) => `${s.section}.${s.key}`)
      .sort();
    expect(Object.keys(LIVE_EFFECTS).sort()).toEqual(live);
  });

  test("each live key: changed in the file, SIGHUP, seen in behaviour; the log file is reopened", async () => {
    const dir = tempDir();
    const tokenA = join(dir, "token-a");
    const tokenB = join(dir, "token-b");
    writeFileSync(tokenA, TOKEN_A);
    writeFileSync(tokenB, TOKEN_B);
    const logFile = join(dir, "node.log");
    const file = join(dir, "node.toml");
    const config = (v: {
      level: string;
      maxConn: number;
      maxMixers: number;
      drain: number;
      audio: string;
      token: string;
      cors?: string[];
    }) =>
      [
        "[node]",
        `max_connections = ${v.maxConn}`,
        `max_mixers = ${v.maxMixers}`,
        `drain_timeout = ${v.drain}`,
        "[network]",
        "heartbeat_interval = 1",
        "[audio]",
        v.audio,
        "[dashboard]",
        `auth_token_file = "${v.token}"`,
        `cors_origins = ${JSON.stringify(v.cors ?? [])}`,
        "[logging]",
        `level = "${v.level}"`,
        `file = "${logFile}"`,
        "",
      ].join("\n");
    writeFileSync(file, config({ level: "info", maxConn: 100, maxMixers: 5, drain: 60, audio: "", token: tokenA }));
    const h = await startNode({ args: ["--config", file] });
    started.push(h);
    const first = await api(h, "/api/status", TOKEN_A);
    expect(first.status).toBe(200);
    const addr = `/ip4/127.0.0.1/tcp/${h.p2pPort}/p2p/${(await first.json()).peer_id}`;
    // One participant holds room "a" through the whole test.
    const holder = Bun.spawn([BINARY, "join", "--room", "a", "--node", addr, "--duration", "60"], {
      stdout: "ignore",
      stderr: "ignore",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir },
    });
    holders.push(holder);
    await eventually(async () => (await (await api(h, "/api/status", TOKEN_A)).json()).participants === 1, 20_000, "the first participant");
    await Bun.sleep(1500); // a few heartbeats at info level
    expect(jsonLines(h.logs()).some((l) => l.level === "debug")).toBe(false);

    // logrotate: rename the file, then SIGHUP with the new config.
    renameSync(logFile, `${logFile}.1`);
    writeFileSync(
      file,
      config({
        level: "debug",
        maxConn: 42,
        maxMixers: 1,
        drain: 1,
        audio: "top_k_speakers = 2\nshared_encode = false\nbitrate = 64000\njitter_min_ms = 30\njitter_max_ms = 300",
        token: tokenB,
        cors: ["https://directory.example.org"],
      }),
    );
    h.proc.kill("SIGHUP");
    const reloaded = await eventually(() => jsonLines(h.logs()).find((l) => l.msg === "config reloaded"), 10_000, "config reloaded");
    expect([...reloaded.applied].sort()).toEqual(Object.keys(LIVE_EFFECTS).sort());

    // logging.file reopened: the new file has the lines after the rotation, the rotated one keeps the old.
    await eventually(() => existsSync(logFile) && readFileSync(logFile, "utf8").includes("config reloaded"), 5000, "a new log file");
    expect(readFileSync(`${logFile}.1`, "utf8")).not.toContain("config reloaded");
    expect(jsonLines(readFileSync(`${logFile}.1`, "utf8")).every((l) => typeof l.level === "string")).toBe(true);

    // logging.level: debug lines now (heartbeats log at debug).
    await eventually(() => jsonLines(h.logs()).some((l) => l.level === "debug"), 10_000, "debug lines");

    // dashboard.auth_token_file: the old token is refused, the new one accepted.
    expect((await api(h, "/api/status", TOKEN_A)).status).toBe(401);
    const status = await (await api(h, "/api/status", TOKEN_B)).json();

    // dashboard.cors_origins: a listed origin now gets its CORS answer on the read-only API.
    const cors = await fetch(`http://127.0.0.1:${h.dashboardPort}/api/status`, {
      headers: { authorization: `Bearer ${TOKEN_B}`, origin: "https://directory.example.org" },
    });
    expect(cors.headers.get("access-control-allow-origin")).toBe("https://directory.example.org");

    // node.max_connections: the limit, the load figure and the published advertisement.
    expect(status.limits.max_connections).toBe(42);
    expect(status.load.max_clients).toBe(42);
    await eventually(
      async () => (await (await api(h, "/api/status", TOKEN_B)).json()).network?.advertisement?.max_clients === 42,
      10_000,
      "advertised max_clients",
    );

    // audio.*: the media engine runs with the new settings.
    const media = jsonLines(h.logs())
      .filter((l) => l.msg === "media settings updated")
      .at(-1);
    expect(media?.settings).toMatchObject({
      topKSpeakers: 2,
      sharedEncode: false,
      bitrate: 64000,
      jitterMinMs: 30,
      jitterMaxMs: 300,
      maxRooms: 1,
      maxParticipants: 42,
    });

    // node.max_mixers = 1: room "a" is open, so a second room is refused.
    // (join retries a refused room: the process is stopped once it has printed the refusal)
    const second = await runCli(["join", "--room", "b", "--node", addr, "--duration", "2"], { timeoutMs: 10_000 });
    expect(second.stderr).toContain("CAPACITY: this node already mixes its maximum of 1 rooms (node.max_mixers)");
    expect((await (await api(h, "/api/rooms", TOKEN_B)).json()).map((r: { id: string }) => r.id)).toEqual(["a"]);

    // node.drain_timeout = 1 s: SIGTERM with a participant still in room "a" stops after about a second,
    // not after the 60 s the node started with.
    const t0 = Date.now();
    h.proc.kill("SIGTERM");
    const timer = setTimeout(() => h.proc.kill("SIGKILL"), 30_000);
    expect(await h.exited).toBe(0);
    clearTimeout(timer);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(h.logs()).toContain("drain timeout reached");
    holder.kill();
  }, 120_000);
});
