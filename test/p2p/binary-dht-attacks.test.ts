/**
 * An outside client attacking the DHT of real processes of the compiled binary on 127.0.0.1: a storage flood
 * (20,000 ~4 KiB records from one connection) against a bootstrap node, and discovery in a region flooded
 * with 200 fake nodes.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { advertisementKey, encodeAdvertisement, signAdvertisement } from "../../src/p2p";
import { type NodeHandle, runCli, startNode } from "../helpers/node-process";
import { cleanupDirs, createHostilePeer, hostileAdvertisement, waitFor } from "./helpers";
import { floodPuts, plantFakeNodes, RawDhtSession } from "./raw-dht";

afterAll(() => cleanupDirs());

async function metric(h: NodeHandle, name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** Resident set size of a process in MiB (Linux /proc). */
function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
}

/** 27 labels of 123 characters: a record of ~3.9 KiB, just under the 4 KiB limit. */
const BIG_LABELS = Array.from({ length: 27 }, (_, i) => `l${i}-${"x".repeat(120)}`);

describe("a DHT storage flood against a bootstrap binary", () => {
  // The bound this test states: the store holds at most network.dht_max_records (2048 here) records of
  // ≤ 4 KiB (~8 MiB), so once the flood is over the node's RSS settles within +80 MiB of what it was before
  // 20,000 ~4 KiB records (~75 MiB) arrived. Right after the flood RSS is higher (garbage of parsing them not
  // yet collected): the test waits, up to 60 s, for it to settle. Without the bounds all 20,000 are live and
  // RSS stays up: the same floods against the binary before the fix went 85 → 297 MiB and settled at 195 MiB
  // (+110 MiB); with the fix it settles at +47 … +59 MiB (the allocator's slack varies with the machine's load).
  const MAX_RECORDS = 2048;
  const RSS_GROWTH_BOUND_MIB = 80;

  test("20,000 ~4 KiB records from one connection: ≤ 4 kept per signer, ≤ dht_max_records in total, RSS within +80 MiB", async () => {
    const boot = await startNode({ args: ["--mode", "bootstrap", "--set", `network.dht_max_records=${MAX_RECORDS}`] });
    const evil = await createHostilePeer();
    try {
      const addr = multiaddr(await boot.multiaddr());
      await evil.libp2p.dial(addr);
      const stored = async () => metric(boot, "agora_dht_store_entries", 'kind="record"');
      const before = rssMiB(boot.proc.pid);
      const t = Date.now() / 1000;
      let n = 0;
      const record = async (key: PrivateKey, id: string, region: string) => {
        const u = hostileAdvertisement(id, { region, labels: BIG_LABELS, last_seen: t + n++ / 1e4, ttl_seconds: 3600 });
        return [advertisementKey(region, id), encodeAdvertisement(await signAdvertisement(u, key))] as [string, Uint8Array];
      };

      // 1. The attack as found: one peer key, 10,000 made-up regions.
      const single: string[] = [];
      await floodPuts(
        evil.libp2p,
        addr,
        (async function* () {
          for (let i = 0; i < 10_000; i++) {
            const r = await record(evil.key, evil.peerId, `made-up-${i}`);
            single.push(r[0]);
            yield r;
          }
        })(),
      );
      expect(await stored()).toBe(4);
      const probe = new RawDhtSession(evil.libp2p, addr);
      for (const k of single.slice(0, 20)) expect(await probe.get(k)).toBeNull();
      for (const k of single.slice(-4)) expect(await probe.get(k)).not.toBeNull();

      // 2. Many keys (2,500 × 4 regions): the total bound, the stalest go.
      const many: string[] = [];
      await floodPuts(
        evil.libp2p,
        addr,
        (async function* () {
          for (let i = 0; i < 2_500; i++) {
            const key = await generateKeyPair("Ed25519");
            const id = peerIdFromPrivateKey(key).toString();
            for (let j = 0; j < 4; j++) {
              const r = await record(key, id, `zone-${j}`);
              many.push(r[0]);
              yield r;
            }
          }
        })(),
      );
      const peak = rssMiB(boot.proc.pid);
      expect(await stored()).toBe(MAX_RECORDS);
      expect(await metric(boot, "agora_dht_store_evictions_total", 'reason="store_full"')).toBeGreaterThanOrEqual(
        many.length - MAX_RECORDS,
      );
      for (const k of [...single.slice(-4), ...many.slice(0, 20)]) expect(await probe.get(k)).toBeNull();
      for (const k of many.slice(-20)) expect(await probe.get(k)).not.toBeNull();
      let after = peak;
      const settleBy = Date.now() + 60_000;
      while (after - before >= RSS_GROWTH_BOUND_MIB && Date.now() < settleBy) {
        await Bun.sleep(1_000);
        after = rssMiB(boot.proc.pid);
      }
      console.log(
        `bootstrap RSS before ${before.toFixed(1)} MiB, right after 20,000 records ${peak.toFixed(1)} MiB, settled ${after.toFixed(1)} MiB (+${(after - before).toFixed(1)} MiB, bound +${RSS_GROWTH_BOUND_MIB})`,
      );
      expect(after - before).toBeLessThan(RSS_GROWTH_BOUND_MIB);
      expect((await fetch(`${boot.dashboardUrl}/health`)).status).toBe(200);
      probe.close();
    } finally {
      await evil.stop();
      boot.cleanup();
    }
  }, 400_000);
});

describe("discovery in a region flooded with 200 fake nodes", () => {
  // Before the fix a query in this flood used its whole timeout (5 s from the API, 15 s from the CLI), waiting
  // on dials to the fakes. The test holds each query to finishing before its deadline, as the asking node's own
  // "discovery finished" log line says (timed_out false): a condition, not a wall-clock bound, so a busy CI
  // machine cannot decide it. The issue's figure (a query ≤ 2 s) is measured by `bun bench/discovery.ts --fake 200`.
  const FAKES = 200;
  const REGION = "flood-zone";
  const nodes: NodeHandle[] = [];
  let blackHole: Server | undefined;

  afterAll(() => {
    for (const h of nodes) h.cleanup();
    for (const s of heldSockets) s.destroy();
    blackHole?.close();
  });
  const heldSockets: Socket[] = [];

  test("every honest node is found and ranked first, fakes (unreachable) last, each query before its deadline", async () => {
    // A TCP port that accepts and then never says a word: a dial there hangs until the dialer gives up, the
    // worst kind of fake address (a refused port would fail at once).
    blackHole = createServer((s) => heldSockets.push(s));
    await new Promise<void>((r) => blackHole!.listen(0, "127.0.0.1", r));
    const holeAddr = `/ip4/127.0.0.1/tcp/${(blackHole.address() as AddressInfo).port}`;

    const boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", "1s"] });
    nodes.push(boot);
    const bootAddr = await boot.multiaddr();
    const dedicated = ["--mode", "dedicated", "--region", REGION, "--heartbeat-interval", "1s", "--bootstrap", bootAddr];
    // the asking node (0) logs at debug: its "discovery finished" lines say whether a query ran out of time
    const honest = await Promise.all([0, 1].map((i) => startNode({ args: i === 0 ? [...dedicated, "--log-level", "debug"] : dedicated })));
    nodes.push(...honest);
    const honestIds = (await Promise.all(honest.map((h) => h.peerId()))).sort();
    const api = async () => {
      const t0 = performance.now();
      const r = (await (await fetch(`${honest[0]!.dashboardUrl}/api/discover?region=${REGION}&limit=100`)).json()) as {
        advertisement: { peer_id: string };
        latency_ms: number | null;
      }[];
      return { ms: performance.now() - t0, found: r };
    };
    const otherId = await honest[1]!.peerId();
    await waitFor("honest nodes discoverable", async () => (await api()).found.length === 1, 30_000, 300);

    const fakeIds = new Set(await plantFakeNodes({ server: multiaddr(bootAddr), region: REGION, count: FAKES, listenAddr: holeAddr }));
    expect(fakeIds.size).toBe(FAKES);

    // From an honest node's API (its own libp2p, already in the DHT) …
    const runs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const { ms, found } = await api();
      runs.push(ms);
      const ids = found.map((n) => n.advertisement.peer_id);
      if (ids[0] !== otherId)
        console.log(
          `query ${i}: ${Math.round(ms)} ms, the other honest node at rank ${ids.indexOf(otherId)} of ${ids.length}; first: ${JSON.stringify(found.slice(0, 3))}; fake first: ${fakeIds.has(ids[0] ?? "")}; the node's own account: ${honest[0]!
            .logs()
            .split("\n")
            .filter((l) => l.includes('"discovery finished"') || l.includes(otherId) || l.includes("provider lookup"))
            .slice(-6)
            .join(" | ")}`,
        );
      // the other honest node first (the asking node does not list itself), reachable; fakes after it
      expect(ids[0]).toBe(otherId);
      expect(found[0]!.latency_ms).not.toBeNull();
      expect(found.slice(1).every((n) => fakeIds.has(n.advertisement.peer_id) && n.latency_ms === null)).toBe(true);
    }
    // The asking node's own report of each of these queries (its readiness polls, before the fakes were
    // planted, are in the same region: only the last 5 lines are the flooded queries).
    const finished = honest[0]!
      .logs()
      .split("\n")
      .filter((l) => l.includes('"discovery finished"'))
      .map((l) => JSON.parse(l) as { query?: { region?: string }; timed_out?: boolean; providers?: number })
      .filter((e) => e.query?.region === REGION);
    const flooded = finished.slice(-runs.length);
    expect(flooded.length).toBe(runs.length);
    expect(flooded.every((e) => (e.providers ?? 0) > FAKES / 2)).toBe(true);
    if (flooded.some((e) => e.timed_out)) console.log(`a flooded query ran out of time; the node's account: ${JSON.stringify(flooded)}`);
    expect(flooded.map((e) => e.timed_out)).toEqual(runs.map(() => false));
    // … and from a fresh `discover` client (new identity, only the bootstrap address): every honest node in the
    // top ranks, reachable, no fake among them.
    const t0 = performance.now();
    const cli = await runCli(
      ["discover", "--bootstrap", bootAddr, "--region", REGION, "--json", "--timeout", "15", "--limit", "10", "--verbose"],
      {
        timeoutMs: 30_000,
      },
    );
    const cliMs = performance.now() - t0;
    expect(cli.code).toBe(0);
    // --verbose: the query's own account on stderr, the result alone on stdout
    expect(cli.stderr).toContain("discovery finished");
    const top = JSON.parse(cli.stdout) as { advertisement: { peer_id: string }; latency_ms: number | null }[];
    const honestRanks = honestIds.map((id) => top.findIndex((n) => n.advertisement.peer_id === id));
    if (honestRanks.some((r) => r < 0 || r > 1))
      console.log(
        `fresh client after ${Math.round(cliMs)} ms: honest nodes at ranks ${honestRanks.join(", ")} of ${top.length}; top 3: ${JSON.stringify(top.slice(0, 3).map((n) => ({ peer: n.advertisement.peer_id, fake: fakeIds.has(n.advertisement.peer_id), latency_ms: n.latency_ms })))}; the client's own account: ${cli.stderr
          .split("\n")
          .filter((l) => l.includes("discovery finished") || honestIds.some((id) => l.includes(id)))
          .join(" | ")}`,
      );
    expect(
      top
        .slice(0, 2)
        .map((n) => n.advertisement.peer_id)
        .sort(),
    ).toEqual(honestIds);
    expect(top.slice(0, 2).every((n) => n.latency_ms !== null)).toBe(true);
    expect(top.slice(2).every((n) => fakeIds.has(n.advertisement.peer_id) && n.latency_ms === null)).toBe(true);
    console.log(
      `discovery with ${FAKES} fake nodes: API query ${runs.map((m) => `${Math.round(m)} ms`).join(", ")}; fresh CLI client (process start + connect + query) ${Math.round(cliMs)} ms`,
    );
  }, 180_000);
});
