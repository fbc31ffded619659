/**
 * The SDK locator's mixer lists (src/p2p/room-locator.ts cachedMixerLists) over a fake discovery walk on an
 * injected clock: a walk that finds no mixer (a busy machine's timed-out walk) must not leave a join with
 * "no live mixer" while a recent walk found some.
 */
import { describe, expect, test } from "bun:test";
import { cachedMixerLists, cachedRoomRecords, type LocatorMixer, type LocatorRoom } from "../../src/p2p/room-locator";

function mixer(peer_id: string): LocatorMixer {
  return { peer_id, region: "eu-west", status: "online", capabilities: ["mixer"], current_load: 0, max_clients: 100, listen_addr: [] };
}

describe("room locator: mixer lists", () => {
  test("one walk serves callers for 2 s; an older list is answered at once and refreshed behind", async () => {
    let t = 0;
    const walks: string[][] = [["a"], ["a", "b"]];
    let calls = 0;
    const mixers = cachedMixerLists(
      async () => {
        calls++;
        return (walks.shift() ?? ["a", "b", "c"]).map(mixer);
      },
      () => t,
    );
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a"]);
    t = 1_000;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a"]);
    expect(calls).toBe(1);
    t = 3_000;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a"]); // stale: answered, walked behind
    expect(calls).toBe(2);
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a", "b"]);
  });

  test("a walk that finds none, or fails, answers the last list that found some while it is under a minute old", async () => {
    let t = 0;
    const walks: (string[] | Error)[] = [["a", "b"], [], new Error("walk failed"), []];
    let calls = 0;
    const mixers = cachedMixerLists(
      async () => {
        calls++;
        const w = walks.shift() ?? [];
        if (w instanceof Error) throw w;
        return w.map(mixer);
      },
      () => t,
    );
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a", "b"]);
    t = 61_000; // past the stale bound: a caller waits for the walk
    // ...which found none: the list from 61 s ago is too old to stand in
    expect(await mixers("eu-west")).toEqual([]);
    // a fresh list, then empty and failed walks within the minute: the fresh list stands in for both
    walks.unshift(["c"]);
    t = 62_000;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["c"]);
    t = 70_000; // stale: answered at once, walked behind (finds none)
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["c"]);
    t = 80_000;
    const before = calls;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["c"]);
    expect(calls).toBe(before + 1); // walked behind: found none, so the list is dropped from the cache
    t = 81_000; // a caller now waits for a walk, which finds none: the list from 62 s stands in
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["c"]);
    expect(calls).toBe(before + 2);
    walks.push(new Error("walk failed"));
    t = 82_000; // and for a walk that fails
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["c"]);
    expect(calls).toBe(before + 3);
    t = 125_000; // the last list that found some is over a minute old: nothing to stand in
    await expect(mixers("eu-west")).resolves.toEqual([]);
  });

  test("a caller that comes while a walk is under way gets the last list found at once; without one, it waits for the walk", async () => {
    let t = 0;
    const pending: ((found: LocatorMixer[]) => void)[] = [];
    const mixers = cachedMixerLists(
      () =>
        new Promise<LocatorMixer[]>((resolve) => {
          pending.push(resolve);
        }),
      () => t,
    );
    // No list yet: the first caller waits for the walk.
    let first: string[] | undefined;
    const firstCall = mixers("eu-west").then((l) => {
      first = l.map((m) => m.peer_id);
    });
    await Bun.sleep(0);
    expect(first).toBeUndefined();
    pending.shift()!(["a"].map(mixer));
    await firstCall;
    expect(first).toEqual(["a"]);
    // Stale: answered at once, a walk starts behind and hangs (a busy network).
    t = 3_000;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a"]);
    expect(pending.length).toBe(1);
    // Within that walk's first 2 s, callers get the last list at once and start no second walk.
    t = 3_500;
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a"]);
    expect(pending.length).toBe(1);
    pending.shift()!(["a", "b"].map(mixer));
    await Bun.sleep(0);
    expect((await mixers("eu-west")).map((m) => m.peer_id)).toEqual(["a", "b"]);
  });
});

describe("room locator: room records", () => {
  const rec = (host: string, epoch = 1): LocatorRoom => ({ host, addrs: [], epoch, status: "active" });

  test("a found record answers lookups of that room for 1.5 s; a fresh lookup and an older one walk again", async () => {
    let t = 0;
    const answers: (LocatorRoom | undefined)[] = [rec("h1"), rec("h2", 2), rec("h3", 3)];
    const walked: string[] = [];
    const resolve = cachedRoomRecords(
      async (room) => {
        walked.push(room);
        return answers.shift();
      },
      () => t,
    );
    expect((await resolve("r"))?.host).toBe("h1");
    t = 1_000;
    expect((await resolve("r"))?.host).toBe("h1"); // from the cache
    expect(walked).toEqual(["r"]);
    expect((await resolve("r", { fresh: true }))?.host).toBe("h2"); // a REDIRECT's confirmation asks afresh
    t = 2_400;
    expect((await resolve("r"))?.host).toBe("h2"); // the fresh answer restarted the 1.5 s
    t = 2_600;
    expect((await resolve("r"))?.host).toBe("h3");
    expect(walked).toEqual(["r", "r", "r"]);
  });

  test("a room not found is asked again every time (its first claim is seen at once); callers get copies", async () => {
    let t = 0;
    const answers: (LocatorRoom | undefined)[] = [undefined, undefined, rec("h1")];
    let walks = 0;
    const resolve = cachedRoomRecords(
      async () => {
        walks++;
        return answers.shift();
      },
      () => t,
    );
    expect(await resolve("new")).toBeUndefined();
    expect(await resolve("new")).toBeUndefined();
    const a = await resolve("new");
    expect(walks).toBe(3);
    a!.host = "mutated";
    t = 100;
    expect((await resolve("new"))?.host).toBe("h1");
    expect(walks).toBe(3);
  });
});
