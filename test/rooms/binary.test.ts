/**
 * The room server in the compiled binary: `audio.bitrate` reaches clients in JOINED and follows a SIGHUP
 * (issue 11, point 2), `join` / `loadgen --json` report loss both from sequence gaps and against the wall
 * clock (point 6), and the per-host inbound connection rate limit protocol.md documents holds (point 11).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { multiaddr } from "@multiformats/multiaddr";
import { AudioRemoteError, AudioSession, WireErrorCode } from "../../src/client";
import { createBareClientNode } from "../helpers/net-fakes";
import { eventually, type NodeHandle, runCli, startNode, tempDir } from "../helpers/node-process";

setDefaultTimeout(120_000);

const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});

describe("audio.bitrate", () => {
  test("JOINED suggests the configured bitrate; a SIGHUP after editing the file changes it for new joins", async () => {
    const dir = tempDir();
    const file = join(dir, "node.toml");
    writeFileSync(file, `[audio]\nbitrate = 24000\n`);
    const h = await startNode({ args: ["--config", file], dataDir: dir });
    started.push(h);
    const client = await createBareClientNode();
    try {
      const target = multiaddr(await h.multiaddr());
      const joinedBitrate = async () => {
        const s = await AudioSession.open({ libp2p: client, target, room: "bitrate" });
        const b = s.joined.bitrate;
        await s.leave();
        return b;
      };
      expect(await joinedBitrate()).toBe(24_000);
      writeFileSync(file, `[audio]\nbitrate = 48000\n`);
      h.proc.kill("SIGHUP");
      await eventually(() => h.logs().includes("config reloaded"), 10_000, "the reload");
      expect(await joinedBitrate()).toBe(48_000);
    } finally {
      await client.stop();
      await h.stop();
    }
  });
});

describe("loss reported two ways", () => {
  test("join and loadgen --json report frames due by the wall clock next to the sequence-gap figures", async () => {
    const h = await startNode();
    started.push(h);
    const addr = await h.multiaddr();
    // `join` always prints its report as one JSON line
    const j = await runCli(["join", "--node", addr, "--room", "loss", "--duration", "2"], { timeoutMs: 60_000 });
    expect(j.code).toBe(0);
    const jr = JSON.parse(j.stdout.trim().split("\n").at(-1)!) as Record<string, number>;
    for (const k of ["framesExpected", "lossPercent", "framesDue", "dueLossPercent"]) expect(typeof jr[k]).toBe("number");
    // about 2 s joined: ~100 frames due (the mixer sends a frame per tick even to a lone participant)
    expect(jr.framesDue!).toBeGreaterThanOrEqual(90);
    expect(jr.framesDue!).toBeLessThan(200);

    const l = await runCli(["loadgen", "--node", addr, "--rooms", "1", "--participants", "2", "--duration", "2", "--json"], {
      timeoutMs: 60_000,
    });
    expect(l.code).toBe(0);
    const lr = JSON.parse(l.stdout.trim().split("\n").at(-1)!) as { totals: Record<string, number>; perRoom: Record<string, number>[] };
    for (const k of ["framesExpected", "lossPercent", "framesDue", "dueLossPercent"]) {
      expect(typeof lr.totals[k]).toBe("number");
      expect(typeof lr.perRoom[0]![k]).toBe("number");
    }
    expect(lr.totals.framesDue!).toBeGreaterThanOrEqual(2 * 90);
    await h.stop();
  });
});

describe("connections per host", () => {
  test("at most 5 new inbound connections per second from one IP (protocol.md, Transport and framing)", async () => {
    const h = await startNode();
    started.push(h);
    const target = multiaddr(await h.multiaddr());
    const clients = await Promise.all(Array.from({ length: 20 }, () => createBareClientNode()));
    try {
      // 20 dials at once: their TCP connects reach the node within a few ms, far inside one second. The
      // limiter counts per fixed one-second window, so a burst straddling a window edge may see 2 × 5.
      const results = await Promise.allSettled(clients.map((c) => c.dial(target, { signal: AbortSignal.timeout(20_000) })));
      const opened = results.filter((r) => r.status === "fulfilled").length;
      expect(opened).toBeGreaterThanOrEqual(1);
      expect(opened).toBeLessThanOrEqual(10);
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
      await h.stop();
    }
  });
});

describe("per-peer stream limit from the config", () => {
  test("audio.max_streams_per_peer = 2: a third participant from the same peer is refused with RATE_LIMITED", async () => {
    const h = await startNode({ args: ["--set", "audio.max_streams_per_peer=2"] });
    started.push(h);
    const client = await createBareClientNode();
    try {
      const target = multiaddr(await h.multiaddr());
      const a = await AudioSession.open({ libp2p: client, target, room: "limit" });
      const b = await AudioSession.open({ libp2p: client, target, room: "limit" });
      let refused: unknown;
      try {
        await AudioSession.open({ libp2p: client, target, room: "limit" });
      } catch (err) {
        refused = err;
      }
      expect(refused).toBeInstanceOf(AudioRemoteError);
      expect((refused as AudioRemoteError).wireCode).toBe(WireErrorCode.RATE_LIMITED);
      await a.leave();
      // A slot is free again once one of the two leaves.
      await eventually(
        async () => {
          try {
            const c = await AudioSession.open({ libp2p: client, target, room: "limit" });
            await c.leave();
            return true;
          } catch {
            return false;
          }
        },
        20_000,
        "a join after a leave",
      );
      await b.leave();
    } finally {
      await client.stop();
      await h.stop();
    }
  });
});
