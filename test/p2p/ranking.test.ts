import { describe, expect, test } from "bun:test";
import type { NodeAdvertisement } from "../../src/p2p/advertisement";
import { cpuPenalty, loadScore, memPenalty, rankNodes, scoreNode } from "../../src/p2p/ranking";

function adv(peer: string, o: Partial<NodeAdvertisement> = {}): NodeAdvertisement {
  return {
    peer_id: peer,
    version: "0.1.0",
    region: "eu-west",
    capabilities: ["mixer"],
    max_clients: 100,
    current_load: 0,
    uptime_seconds: 1,
    reputation: 0.5,
    last_seen: 1,
    listen_addr: [],
    group: "default",
    labels: [],
    status: "online",
    cpu_percent: 0,
    mem_percent: 0,
    seq: 1,
    ttl_seconds: 90,
    signature: "",
    ...o,
  };
}

describe("seed 002 load score", () => {
  // Seed 002: "Node A: 40 peers, CPU 85%, Memory 60% → 0.4 + 0.5 + 0.15 = 1.05". Its own penalty table gives
  // memory 60 % +0.05 (+0.15 only above 70 %), so A is 0.95: the example's arithmetic is off, its conclusion
  // (A avoided, B and C tied at 0.5) is not.
  const A = adv("A", { current_load: 40, cpu_percent: 85, mem_percent: 60 });
  const B = adv("B", { current_load: 50, cpu_percent: 30, mem_percent: 45 });
  const C = adv("C", { current_load: 30, cpu_percent: 50, mem_percent: 75 });

  test("A, B, C as in the seed's table", () => {
    expect(loadScore(A).score).toBe(0.95);
    expect(loadScore(B).score).toBe(0.5);
    expect(loadScore(C).score).toBe(0.5);
    expect(loadScore(A).reasons).toEqual(["load 40/100 (+0.4)", "cpu 85% (+0.5)", "mem 60% (+0.05)"]);
    expect(loadScore(C).reasons).toEqual(["load 30/100 (+0.3)", "cpu 50% (+0.05)", "mem 75% (+0.15)"]);
  });

  test("B or C is chosen, A is avoided", () => {
    const ranked = rankNodes([A, B, C].map((a) => ({ advertisement: a, latency_ms: 0 })));
    expect(ranked.map((r) => r.advertisement.peer_id)).toEqual(["B", "C", "A"]);
  });

  test("threshold edges are strict (> not >=)", () => {
    expect([40, 40.1, 60, 60.1, 80, 80.1].map(cpuPenalty)).toEqual([0, 0.05, 0.05, 0.2, 0.2, 0.5]);
    expect([50, 50.1, 70, 70.1, 85, 85.1].map(memPenalty)).toEqual([0, 0.05, 0.05, 0.15, 0.15, 0.4]);
  });

  test("a node advertising no capacity scores as full", () => {
    expect(loadScore(adv("Z", { max_clients: 0, current_load: 0 })).score).toBe(1);
  });
});

describe("full score and ordering", () => {
  test("latency adds ms/1000 and is explained", () => {
    const s = scoreNode(adv("X", { current_load: 45 }), 3);
    expect(s.score).toBe(0.453);
    expect(s.reasons).toEqual(["latency 3 ms (+0.003)", "load 45/100 (+0.45)"]);
  });

  test("unknown latency and degraded status are penalised", () => {
    const s = scoreNode(adv("X", { status: "degraded" }), null);
    expect(s.score).toBe(1.25);
    expect(s.reasons[0]).toContain("latency unknown");
    expect(s.reasons).toContain("status degraded (+0.25)");
  });

  test("lower latency wins between equally loaded nodes", () => {
    const r = rankNodes([
      { advertisement: adv("far", { current_load: 10 }), latency_ms: 120 },
      { advertisement: adv("near", { current_load: 10 }), latency_ms: 4 },
    ]);
    expect(r.map((x) => x.advertisement.peer_id)).toEqual(["near", "far"]);
    expect(r[0]!.score).toBeLessThan(r[1]!.score);
  });

  test("ties go to the preferred group, then lexical group, then peer id", () => {
    const items = [
      { advertisement: adv("p3", { group: "zeta" }), latency_ms: 5 },
      { advertisement: adv("p2", { group: "alpha" }), latency_ms: 5 },
      { advertisement: adv("p1", { group: "mid" }), latency_ms: 5 },
      { advertisement: adv("p0", { group: "alpha" }), latency_ms: 5 },
    ];
    expect(rankNodes(items).map((x) => x.advertisement.peer_id)).toEqual(["p0", "p2", "p1", "p3"]);
    expect(rankNodes(items, { preferGroup: "zeta" }).map((x) => x.advertisement.peer_id)).toEqual(["p3", "p0", "p2", "p1"]);
    // a better score still beats the preferred group
    const better = [...items, { advertisement: adv("best", { group: "other" }), latency_ms: 1 }];
    expect(rankNodes(better, { preferGroup: "zeta" })[0]!.advertisement.peer_id).toBe("best");
  });

  test("a node that did not answer a ping ranks after every node that did, whatever its claimed load", () => {
    const fake = { advertisement: adv("fake", { current_load: 0, max_clients: 1000 }), latency_ms: null };
    const busy = {
      advertisement: adv("busy", { current_load: 90, cpu_percent: 95, mem_percent: 90, status: "degraded" }),
      latency_ms: 400,
    };
    const ok = { advertisement: adv("ok", { current_load: 20 }), latency_ms: 10 };
    // busy scores 0.4 + 0.9 + 0.5 + 0.4 + 0.25 = 2.45, the fake 1.0: the fake still goes last
    expect(rankNodes([fake, busy, ok]).map((x) => x.advertisement.peer_id)).toEqual(["ok", "busy", "fake"]);
    expect(rankNodes([fake, busy], { preferGroup: "default" }).map((x) => x.advertisement.peer_id)).toEqual(["busy", "fake"]);
  });
});
