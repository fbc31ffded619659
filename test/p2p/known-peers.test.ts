import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { silentLogger } from "../../src/log";
import { backoffDelay } from "../../src/p2p/bootstrap";
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
    saveKnownPeers(file, [], [
      { peer_id: PEER, addrs: ["/ip4/10.0.0.1/tcp/7001"], last_seen: now - 10 },
      { peer_id: PEER2, addrs: ["/ip4/10.0.0.2/tcp/7001", "/dns4/x.example/tcp/7001"], last_seen: now },
    ], now);
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
    const old: KnownPeer[] = [{ peer_id: PEER, addrs: ["/ip4/10.0.0.1/tcp/1"], last_seen: now - 100 }, { peer_id: PEER2, addrs: ["/ip4/10.0.0.2/tcp/1"], last_seen: now - 40 * 86400 }];
    const out = saveKnownPeers(file, old, [{ peer_id: PEER, addrs: ["/ip4/10.0.0.9/tcp/2"], last_seen: now }], now);
    expect(out).toEqual([{ peer_id: PEER, addrs: ["/ip4/10.0.0.9/tcp/2"], last_seen: now }]);
    const many = Array.from({ length: MAX_KNOWN_PEERS + 50 }, (_, i) => ({ peer_id: `12D3KooW${String(i).padStart(44, "A")}`, addrs: ["/ip4/10.1.0.1/tcp/1"], last_seen: now - i }));
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

describe("bootstrap redial backoff", () => {
  const o = { baseMs: 1_000, capMs: 300_000 };
  test("doubles per attempt and is capped", () => {
    const nominal = (a: number) => backoffDelay(a, o, () => 1);
    expect([0, 1, 2, 3, 8, 9, 50].map(nominal)).toEqual([1_000, 2_000, 4_000, 8_000, 256_000, 300_000, 300_000]);
  });
  test("jitter spreads each delay over [½, 1] of the nominal value", () => {
    expect(backoffDelay(3, o, () => 0)).toBe(4_000);
    expect(backoffDelay(3, o, () => 0.5)).toBe(6_000);
    const samples = Array.from({ length: 200 }, () => backoffDelay(2, o));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(2_000);
    expect(Math.max(...samples)).toBeLessThanOrEqual(4_000);
    expect(new Set(samples).size).toBeGreaterThan(10);
  });
});
