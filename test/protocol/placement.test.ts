import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { type PlacementCandidate, placementWeight, placeRoom, rankPlacement } from "../../src/protocol";

const A = "12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B = "12D3KooWBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C = "12D3KooWCccccccccccccccccccccccccccccccccccccccccccccc";

function mixer(peer_id: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return { peer_id, region: "eu-west", status: "online", capabilities: ["mixer"], current_load: 0, max_clients: 10, ...over };
}

describe("room placement (rendezvous hashing)", () => {
  test("test vectors of protocol.md", () => {
    expect(placementWeight("standup", A).toString(16).padStart(16, "0")).toBe("b824c633eaca9f5a");
    expect(placementWeight("standup", B).toString(16).padStart(16, "0")).toBe("5293196c2658df7e");
    expect(placementWeight("standup", C).toString(16).padStart(16, "0")).toBe("03d579b99f4eaf29");
    expect(rankPlacement("standup", "eu-west", [mixer(C), mixer(B), mixer(A)]).map((m) => m.peer_id)).toEqual([A, B, C]);
    expect(placeRoom("standup", "eu-west", [mixer(A), mixer(B), mixer(C)], [A])?.peer_id).toBe(B);
  });

  test("the weight is the first 8 bytes of SHA-256 over the documented string", () => {
    for (const [room, peer] of [
      ["r1", A],
      ["a.b-c_d", C],
    ] as const) {
      const digest = createHash("sha256").update(`agora-room-placement/v1\n${room}\n${peer}`, "utf8").digest();
      expect(placementWeight(room, peer)).toBe(digest.readBigUInt64BE(0));
    }
  });

  test("the order of the inputs does not matter", () => {
    const all = [mixer(A), mixer(B), mixer(C)];
    for (const room of ["r1", "r2", "standup", "x"]) {
      const first = placeRoom(room, "eu-west", all)?.peer_id;
      expect(placeRoom(room, "eu-west", [...all].reverse())?.peer_id).toBe(first!);
      expect(placeRoom(room, "eu-west", [all[1]!, all[2]!, all[0]!])?.peer_id).toBe(first!);
    }
  });

  test("draining, full, other-region and non-mixer nodes are not candidates", () => {
    const cands = [
      mixer(A, { status: "draining" }),
      mixer(B, { current_load: 10 }),
      mixer(C, { region: "us-east" }),
      mixer("12D3KooWDddddddddddddddddddddddddddddddddddddddddddddd", { capabilities: ["relay"] }),
    ];
    expect(rankPlacement("standup", "eu-west", cands)).toEqual([]);
    expect(placeRoom("standup", "eu-west", [mixer(B, { status: "degraded" })])?.peer_id).toBe(B);
  });

  test("removing one mixer only moves the rooms it had (minimal disruption)", () => {
    const all = [mixer(A), mixer(B), mixer(C)];
    let moved = 0;
    for (let i = 0; i < 200; i++) {
      const room = `room-${i}`;
      const before = placeRoom(room, "eu-west", all)!.peer_id;
      const after = placeRoom(room, "eu-west", all, [C])!.peer_id;
      if (before !== C) expect(after).toBe(before);
      else moved++;
    }
    // about a third of the rooms were on C; every one of them moved
    expect(moved).toBeGreaterThan(30);
    expect(moved).toBeLessThan(110);
  });

  test("a peer id given twice counts once", () => {
    expect(rankPlacement("r", "eu-west", [mixer(A), mixer(A, { current_load: 3 })]).length).toBe(1);
  });
});
