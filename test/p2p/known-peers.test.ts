import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pRetry from "p-retry";
import { silentLogger } from "../../src/log";
import { type BackoffOptions, backoffRetryOptions } from "../../src/p2p/bootstrap";
import { type KnownPeer, loadKnownPeers, MAX_KNOWN_PEERS, saveKnownPeers } from "../../src/p2p/known-peers";
import { cleanupDirs, tempDir } from "./helpers";

afterAll(() => cleanupDirs());

const PEER = "12D3KooWKDStZZgYnA7uRggHUq1EZyxtknJX2q8AziLsnaTSswaf";
const PEER2 = "12D3KooWNtjfKxnoPvwTmT5VdwVbMjvSLw83N4LfTSYZxjZvhHYA";

describe("known-peers.json", () => {
  test("save then load round-trips, newest first, written atomically with mode 0600", () => {
    const dir = tempDir();
    const file = join(dir, "known-peers.json");
    const now = 1_800_000_000;
    saveKnownPeers(
      file,
      [],
      [
        { peer_id: PEER, addrs: ["/ip4/10.0.0.1/tcp/7001"], last_seen: now - 10 },
        { peer_id: PEER2, addrs: ["/ip4/10.0.0.2/tcp/7001", "/dns4/x.example/tcp/7001"], last_seen: now },
      ],
      now,
    );
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // no temp file left behind
    expect(readdirSync(dir)).toEqual(["known-peers.json"]);
    const back = loadKnownPeers(file, silentLogger());
    expect(back.map((p) => p.peer_id)).toEqual([PEER2, PEER]);
    expect(back[0]!.addrs).toEqual(["/ip4/10.0.0.2/tcp/7001", "/dns4/x.example/tcp/7001"]);
  });

  test("merging keeps the newest entry per peer, drops month-old peers and caps the list", () => {
    const dir = tempDir();
    const file = join(dir, "known-peers.json");
    const now = 1_800_000_000;
    const old: KnownPeer[] = [
      { peer_id: PEER, addrs: ["/ip4/10.0.0.1/tcp/1"], last_seen: now - 100 },
      { peer_id: PEER2, addrs: ["/ip4/10.0.0.2/tcp/1"], last_seen: now - 40 * 86400 },
    ];
    const out = saveKnownPeers(file, old, [{ peer_id: PEER, addrs: ["/ip4/10.0.0.9/tcp/2"], last_seen: now }], now);
    expect(out).toEqual([{ peer_id: PEER, addrs: ["/ip4/10.0.0.9/tcp/2"], last_seen: now }]);
    const many = Array.from({ length: MAX_KNOWN_PEERS + 50 }, (_, i) => ({
      peer_id: `12D3KooW${String(i).padStart(44, "A")}`,
      addrs: ["/ip4/10.1.0.1/tcp/1"],
      last_seen: now - i,
    }));
    expect(saveKnownPeers(file, [], many, now)).toHaveLength(MAX_KNOWN_PEERS);
  });

  test("missing, corrupt or hostile files are ignored, never fatal", () => {
    const dir = tempDir();
    const file = join(dir, "known-peers.json");
    expect(loadKnownPeers(file, silentLogger())).toEqual([]);
    writeFileSync(file, "{not json");
    expect(loadKnownPeers(file, silentLogger())).toEqual([]);
    writeFileSync(file, JSON.stringify({ version: 1, peers: "nope" }));
    expect(loadKnownPeers(file, silentLogger())).toEqual([]);
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        peers: [
          { peer_id: "../../etc/passwd", addrs: ["/ip4/1.2.3.4/tcp/1"], last_seen: 1 },
          { peer_id: PEER, addrs: ["garbage", 42, "/ip4/1.2.3.4/tcp/1"], last_seen: 5 },
          { peer_id: PEER2, addrs: ["garbage"], last_seen: 6 },
          null,
        ],
      }),
    );
    expect(loadKnownPeers(file, silentLogger())).toEqual([{ peer_id: PEER, addrs: ["/ip4/1.2.3.4/tcp/1"], last_seen: 5 }]);
    expect(existsSync(file)).toBe(true);
    expect(readFileSync(file, "utf8")).toContain("garbage"); // loading never rewrites the file
  });
});

describe("bootstrap redial backoff (p-retry with backoffRetryOptions)", () => {
  const fail = () => Promise.reject(new Error("unreachable"));

  /** The delays p-retry chooses for the first `n` retries (it really waits them: keep the base small). */
  async function delays(o: BackoffOptions, n: number): Promise<number[]> {
    const out: number[] = [];
    const done = new Error("enough");
    await pRetry(fail, {
      ...backoffRetryOptions(o),
      onFailedAttempt: ({ retryDelay }) => {
        out.push(retryDelay);
        if (out.length >= n) throw done;
      },
    }).catch((err) => {
      if (err !== done) throw err;
    });
    return out;
  }

  test("doubles per attempt, jittered into [½, 1] of the nominal value, and is capped", async () => {
    const o = { baseMs: 4, capMs: 100 };
    const got = await delays(o, 8);
    const nominal = [4, 8, 16, 32, 64, 128, 256, 512];
    got.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(Math.min(o.capMs, nominal[i]! / 2));
      expect(d).toBeLessThanOrEqual(Math.min(o.capMs, nominal[i]!));
    });
    expect(got.slice(6)).toEqual([100, 100]);
  });

  test("retries for ever, never gives up on its own", () => {
    expect(backoffRetryOptions({ baseMs: 1_000, capMs: 300_000 }).retries).toBe(Number.POSITIVE_INFINITY);
  });

  test("jitter spreads the delays over [½, 1] of the nominal value", async () => {
    // The first delay is known before p-retry waits it: sample it without waiting.
    const samples = await Promise.all(Array.from({ length: 200 }, () => delays({ baseMs: 1_000, capMs: 300_000 }, 1).then((d) => d[0]!)));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(500);
    expect(Math.max(...samples)).toBeLessThanOrEqual(1_000);
    expect(new Set(samples).size).toBeGreaterThan(10);
  });
});
