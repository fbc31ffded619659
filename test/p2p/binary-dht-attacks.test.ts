/**
 * An outside client attacking the DHT of real processes of the compiled binary on 127.0.0.1: a storage flood
 * (20,000 ~4 KiB records from one connection) against a bootstrap node, and discovery in a region flooded
 * with 200 fake nodes.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { advertisementKey, encodeAdvertisement, signAdvertisement } from "../../src/p2p";
import { type NodeHandle, startNode } from "../helpers/node-process";
import { cleanupDirs, createHostilePeer, hostileAdvertisement } from "./helpers";
import { floodPuts, RawDhtSession } from "./raw-dht";

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
  // ≤ 4 KiB (~8 MiB), so once the flood is over the node's RSS settles within +64 MiB of what it was before
  // 20,000 ~4 KiB records (~75 MiB) arrived. Right after the flood RSS is higher (garbage of parsing them not
  // yet collected): the test waits, up to 60 s, for it to settle. Without the bounds all 20,000 are live and
  // RSS stays up: +135 MiB measured (81 → 216 MiB).
  const MAX_RECORDS = 2048;
  const RSS_GROWTH_BOUND_MIB = 64;

  test("20,000 ~4 KiB records from one connection: ≤ 4 kept per signer, ≤ dht_max_records in total, RSS within +64 MiB", async () => {
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
      await floodPuts(evil.libp2p, addr, (async function* () {
        for (let i = 0; i < 10_000; i++) {
          const r = await record(evil.key, evil.peerId, `made-up-${i}`);
          single.push(r[0]);
          yield r;
        }
      })());
      expect(await stored()).toBe(4);
      const probe = new RawDhtSession(evil.libp2p, addr);
      for (const k of single.slice(0, 20)) expect(await probe.get(k)).toBeNull();
      for (const k of single.slice(-4)) expect(await probe.get(k)).not.toBeNull();

      // 2. Many keys (2,500 × 4 regions): the total bound, the stalest go.
      const many: string[] = [];
      await floodPuts(evil.libp2p, addr, (async function* () {
        for (let i = 0; i < 2_500; i++) {
          const key = await generateKeyPair("Ed25519");
          const id = peerIdFromPrivateKey(key).toString();
          for (let j = 0; j < 4; j++) {
            const r = await record(key, id, `zone-${j}`);
            many.push(r[0]);
            yield r;
          }
        }
      })());
      const peak = rssMiB(boot.proc.pid);
      expect(await stored()).toBe(MAX_RECORDS);
      expect(await metric(boot, "agora_dht_store_evictions_total", 'reason="store_full"')).toBeGreaterThanOrEqual(many.length - MAX_RECORDS);
      for (const k of [...single.slice(-4), ...many.slice(0, 20)]) expect(await probe.get(k)).toBeNull();
      for (const k of many.slice(-20)) expect(await probe.get(k)).not.toBeNull();
      let after = peak;
      const settleBy = Date.now() + 60_000;
      while (after - before >= RSS_GROWTH_BOUND_MIB && Date.now() < settleBy) {
        await Bun.sleep(1_000);
        after = rssMiB(boot.proc.pid);
      }
      console.log(`bootstrap RSS before ${before.toFixed(1)} MiB, right after 20,000 records ${peak.toFixed(1)} MiB, settled ${after.toFixed(1)} MiB (+${(after - before).toFixed(1)} MiB, bound +${RSS_GROWTH_BOUND_MIB})`);
      expect(after - before).toBeLessThan(RSS_GROWTH_BOUND_MIB);
      expect((await fetch(`${boot.dashboardUrl}/health`)).status).toBe(200);
      probe.close();
    } finally {
      await evil.stop();
      boot.cleanup();
    }
  }, 400_000);
});
