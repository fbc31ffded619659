/**
 * Rooms bench on a 10-node loopback network of compiled-binary processes (1 bootstrap + 9 mixers, one region):
 *
 *   join by name   resolve the room record (or place it by the rule) + dial + JOINED, on a connected client
 *                  (SDK navigator over a DHT client): a new room (placement + claim) and a second joiner of
 *                  it (record resolve, maybe a REDIRECT). p50/p95. Target p95 ≤ 1 s.
 *   handover gap   a room of 5 talking participants; its host drains (POST /api/drain), MOVE, make-before-
 *                  break to the successor, then the drain is cancelled and the next host drains: per moved
 *                  participant, ms between the last frame from the old host and the first from the new.
 *                  p50/p99 over drains × 5. Target p99 ≤ 200 ms.
 *   reunite        the host of a 5-participant room is SIGKILLed: ms until every participant is joined on
 *                  the one successor. Target ≤ 5 s.
 *
 *   idle CPU       before the first join: each node's CPU (process, and its main thread) from /proc/<pid>/stat
 *                  over --idle-seconds (10), once --idle-settle seconds (30) have passed since the network came
 *                  up with no room anywhere: what an operator's node costs while nobody talks.
 *   join phases    the navigator's breakdown of each join (stats.lastOpen): placement (record lookup or its
 *                  head start, mixer list), probe, dial, the mixer's answer, datagram setup, REDIRECTs. p50/p95.
 *
 * Usage: bun bench/rooms.ts [--joins 20] [--drains 20] [--kills 3] [--idle-seconds 10] [--idle-settle 30] [--heartbeat 30]
 *   --heartbeat S   every node's heartbeat_interval (default: the node's own default, 30 s, what operators run;
 *                   2 s re-publishes 15 times as often: on 2 cores, ten nodes' idle cost then slows every join)
 *        (bounded: every wait has a deadline)
 * Prints a table, then one JSON line.
 */
import { readFileSync } from "node:fs";
import { loadOpusCodec, type OpenPhases, RoomNavigator } from "../src/client";
import { silentLogger } from "../src/log";
import { createRoomLocator, type RoomLocatorClient } from "../src/p2p";
import { eventually, type NodeHandle, startNode } from "../test/helpers/node-process";
import { Participant, stopParticipants } from "../test/helpers/room-participant";
import { positiveArg } from "./args";

const JOINS = positiveArg("joins", 20);
const DRAINS = positiveArg("drains", 20);
const KILLS = positiveArg("kills", 3);
const IDLE_S = positiveArg("idle-seconds", 10);
const IDLE_SETTLE_S = positiveArg("idle-settle", 30);
const REGION = "bench-region";
const HEARTBEAT_S = positiveArg("heartbeat", 30);
/** POST /api/drain needs an admin token. */
const TOKEN = "bench-rooms-admin-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}` };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}
const r0 = (x: number) => Math.round(x);
const r1 = (x: number) => Math.round(x * 10) / 10;

const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;
/** CPU seconds (utime + stime) of a process, or of one of its threads (the main thread's tid is the pid). */
function cpuSeconds(pid: number, tid?: number): number {
  try {
    const line = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
    const f = line.slice(line.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

const codec = await loadOpusCodec();
const nodes: NodeHandle[] = [];
let locator: RoomLocatorClient | undefined;
let exitCode = 0;
const out: Record<string, unknown> = {};
try {
  const boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  nodes.push(boot);
  const bootAddr = await boot.multiaddr();
  const mixerArgs = [
    "--mode",
    "dedicated",
    "--region",
    REGION,
    "--heartbeat-interval",
    `${HEARTBEAT_S}s`,
    "--bootstrap",
    bootAddr,
    "--set",
    "node.drain_timeout=20",
  ];
  const mixers = await Promise.all(
    Array.from({ length: 9 }, () => startNode({ args: mixerArgs, env: { AGORA_DASHBOARD_AUTH_TOKEN: TOKEN } })),
  );
  nodes.push(...mixers);
  // The bootstrap takes at most 5 new connections per second from one IP: nine mixers just dialled it.
  let l: RoomLocatorClient | undefined;
  for (let i = 0; !l; i++) {
    try {
      l = await createRoomLocator({ bootstrap: [bootAddr], logger: silentLogger() });
    } catch (err) {
      if (i >= 5) throw err;
      await Bun.sleep(1_000);
    }
  }
  locator = l;
  // All nine, if walks find them within 90 s (on a busy machine one may miss a node or two: then most). Each
  // walk on a busy machine finds a different part of the region: counted are the mixers any walk found.
  const found = new Set<string>();
  const upBy = performance.now() + 90_000;
  while (performance.now() < upBy && found.size < 9) {
    for (const m of await l.mixers(REGION).catch(() => [])) found.add(m.peer_id);
    if (found.size < 9) await Bun.sleep(500);
  }
  const seen = found.size;
  if (seen < 7) throw new Error(`only ${seen} of 9 mixers discoverable`);
  console.log(`network up: ${seen} of 9 mixers discovered`);
  const ids = await Promise.all(mixers.map((m) => m.peerId()));
  const byPeer = (peer: string | undefined) => mixers[ids.indexOf(peer ?? "")];

  // --- idle CPU ------------------------------------------------------------------------------------
  await Bun.sleep(IDLE_SETTLE_S * 1000);
  const idleFrom = nodes.map((n) => [cpuSeconds(n.proc.pid), cpuSeconds(n.proc.pid, n.proc.pid)] as const);
  const idleT0 = performance.now();
  await Bun.sleep(IDLE_S * 1000);
  const idleWall = (performance.now() - idleT0) / 1000;
  const idlePct = nodes.map((n, i) => ({
    proc: (100 * (cpuSeconds(n.proc.pid) - idleFrom[i]![0])) / idleWall,
    main: (100 * (cpuSeconds(n.proc.pid, n.proc.pid) - idleFrom[i]![1])) / idleWall,
  }));
  const mixerIdle = idlePct.slice(1);
  console.error(
    `idle CPU over ${IDLE_S} s: bootstrap ${r1(idlePct[0]!.proc)} %, mixers ${mixerIdle.map((x) => `${r1(x.proc)}`).join(" ")} % (main threads ${mixerIdle.map((x) => `${r1(x.main)}`).join(" ")} %)`,
  );

  // --- join by name ------------------------------------------------------------------------------
  const firstMs: number[] = [];
  let splits = 0;
  const splitHealMs: number[] = [];
  const secondMs: number[] = [];
  const phases: OpenPhases[] = [];
  for (let i = 0; i < JOINS; i++) {
    const room = `bench-join-${i}`;
    const a = new RoomNavigator({ libp2p: l.libp2p, room, locator: l, region: REGION });
    let t0 = performance.now();
    const sa = await a.open({});
    firstMs.push(performance.now() - t0);
    if (a.stats.lastOpen) phases.push(a.stats.lastOpen);
    // the second joiner comes once the claim is resolvable (that is the "existing room" case)
    await eventually(async () => (await l.resolve(room))?.host === a.host, 3_000, "the claim resolvable", 50).catch(() => undefined);
    const b = new RoomNavigator({ libp2p: l.libp2p, room, locator: l, region: REGION });
    t0 = performance.now();
    const sb = await b.open({});
    secondMs.push(performance.now() - t0);
    if (b.stats.lastOpen) phases.push(b.stats.lastOpen);
    if (a.host !== b.host) {
      splits++;
      // a split claim heals by MOVE (the fast admit's confirmation, the heartbeat's reconcile): how long to one host
      const t1 = performance.now();
      await eventually(() => a.host === b.host, 10_000, "the split room on one host", 20)
        .then(() => splitHealMs.push(performance.now() - t1))
        .catch(() => splitHealMs.push(Number.POSITIVE_INFINITY));
    }
    const phaseText = (n: RoomNavigator) => {
      const o = n.stats.lastOpen;
      return o
        ? `place ${r0(o.placeMs)} (mixers ${r0(o.mixersMs)}, resolve ${o.resolveMs === undefined ? "-" : r0(o.resolveMs)}, by ${o.placedBy}), probe ${r0(o.probeMs)}, dial ${r0(o.dialMs)}, answer ${r0(o.answerMs)}, datagrams ${r0(o.datagramsMs)}, redirects ${o.redirects}`
        : "no phases";
    };
    console.error(
      `join ${i + 1}: new room ${r0(firstMs.at(-1)!)} ms [${phaseText(a)}], second joiner ${r0(secondMs.at(-1)!)} ms [${phaseText(b)}]`,
    );
    await sa.leave();
    await sb.leave();
  }
  const allJoins = [...firstMs, ...secondMs];
  console.error(
    `joins done: ${allJoins.length}, p50 ${r0(pct(allJoins, 50))} ms, p95 ${r0(pct(allJoins, 95))} ms (new rooms p95 ${r0(pct(firstMs, 95))} ms, second joiners p95 ${r0(pct(secondMs, 95))} ms), splits ${splits} (healed to one host: ${splitHealMs.filter(Number.isFinite).length}, p50 ${r0(pct(splitHealMs, 50))} ms)`,
  );

  // --- handover gap --------------------------------------------------------------------------------
  const gaps: number[] = [];
  let dropped = 0;
  const ps = Array.from({ length: 5 }, (_, i) => new Participant(codec, l.libp2p, l, REGION, "bench-handover", 400 + 100 * i));
  await Promise.all(ps.map((p) => p.join()));
  await eventually(() => ps.every((p) => p.frames > 25), 20_000, "audio flowing", 100);
  let drains = 0;
  let stuckDrain: string | undefined;
  /** sessions lost outside a drain (a connection reset on a busy machine): re-homed before the next drain */
  let lostBetweenDrains = 0;
  const movePhases: { joinMs: number; firstFrameMs: number; gapMs: number }[] = [];
  const lostSeen = ps.map((p) => p.lost);
  for (let d = 0; d < DRAINS; d++) {
    // Lost: closed with an error, or silent (a stream reset whose close the session did not report as one).
    const framesBefore = ps.map((p) => p.frames);
    await eventually(() => ps.every((p, i) => p.lost > lostSeen[i]! || p.frames >= framesBefore[i]! + 5), 5_000, "audio", 20).catch(
      () => undefined,
    );
    const lostNow = ps.filter((p, i) => p.lost > lostSeen[i]! || p.frames < framesBefore[i]! + 5);
    if (lostNow.length > 0) {
      // A drain of participants that are no longer there measures nothing: they rejoin the room first.
      lostBetweenDrains += lostNow.length;
      console.error(
        `before drain ${d + 1}: ${lostNow.length} of 5 sessions lost since the last drain (not in a drain; ${lostNow.filter((p) => p.lost > lostSeen[ps.indexOf(p)]!).length} closed with an error, the others silent); rejoining`,
      );
      await Promise.all(lostNow.map((p) => p.rejoin()));
      ps.forEach((p, i) => {
        lostSeen[i] = p.lost;
      });
    }
    const oneHost = await eventually(() => ps.every((p) => p.nav.host === ps[0]!.nav.host), 10_000, "one host", 20).then(
      () => true,
      () => false,
    );
    const host = byPeer(ps[0]!.nav.host);
    if (!host || !oneHost) {
      stuckDrain = `drain ${d + 1}: participants not on one host before it (${[...new Set(ps.map((p) => p.nav.host))].join(", ")})`;
      console.error(stuckDrain);
      break;
    }
    const moves = ps.map((p) => p.moves);
    const seenPhases = ps.map((p) => p.nav.stats.movePhasesMs.length);
    const r = await fetch(`${host.dashboardUrl}/api/drain`, { method: "POST", headers: AUTH });
    if (r.status !== 200) throw new Error(`drain refused: ${r.status}`);
    try {
      await eventually(
        () => ps.every((p, i) => p.moves > moves[i]! || p.lost > lostSeen[i]!),
        20_000,
        `drain ${d}: every participant moved`,
        20,
      );
    } catch (err) {
      // reported, not fatal: the figures so far still stand
      const notMoved = ps.filter((p, i) => p.moves <= moves[i]!);
      const lost = notMoved.filter((p) => p.lost > lostSeen[ps.indexOf(p)]!).length;
      stuckDrain = `drain ${d + 1}: ${notMoved.length} of 5 not moved within 20 s (${lost} of them lost their session, ${notMoved.filter((p) => p.nav.stats.movesFailed > 0).length} with a failed MOVE)`;
      console.error(stuckDrain, err instanceof Error ? err.message : err);
      // What happened: did a MOVE arrive (refused, failed to join the successor) or none at all?
      for (const p of ps)
        console.error(
          `  participant on ${p.nav.host}: moves ${p.moves}, lost ${p.lost}, refused ${p.nav.stats.movesRefused}, failed ${p.nav.stats.movesFailed}${p.nav.stats.lastMoveError ? ` (${p.nav.stats.lastMoveError})` : ""}`,
        );
      for (const line of host.logs().split("\n"))
        if (/bench-handover|drain|successor|handed|room moved/.test(line)) console.error(`  host log: ${line.slice(0, 400)}`);
      await fetch(`${host.dashboardUrl}/api/drain`, { method: "DELETE", headers: AUTH });
      break;
    }
    drains++;
    // Dropped: a session that ended (with an error) before its MOVE was followed. It rejoins, and the series
    // goes on: the figure says how many, the series still runs to the end.
    const droppedNow = ps.filter((p, i) => p.lost > lostSeen[i]! && p.moves <= moves[i]!);
    if (droppedNow.length > 0) {
      dropped += droppedNow.length;
      console.error(`drain ${drains}: ${droppedNow.length} of 5 sessions lost before their MOVE was followed (dropped); rejoining`);
      await Promise.all(droppedNow.map((p) => p.rejoin()));
    }
    ps.forEach((p, i) => {
      lostSeen[i] = p.lost;
    });
    // The tail, per drain: which participant, which phase (MOVE → JOINED by the successor, JOINED → its first frame).
    const fresh = ps.flatMap((p, i) => p.nav.stats.movePhasesMs.slice(seenPhases[i]).map((ph) => ({ ...ph, i })));
    movePhases.push(...fresh);
    const worst = fresh.reduce((a, b) => (b.gapMs > a.gapMs ? b : a), fresh[0] ?? { gapMs: Number.NaN, joinMs: 0, firstFrameMs: 0, i: -1 });
    console.error(
      `drain ${drains}: moved; worst gap ${r0(worst.gapMs)} ms (participant ${worst.i}: MOVE→JOINED ${r0(worst.joinMs)} ms, JOINED→first frame ${r0(worst.firstFrameMs)} ms)`,
    );
    await fetch(`${host.dashboardUrl}/api/drain`, { method: "DELETE", headers: AUTH });
    await eventually(async () => (await fetch(`${host.dashboardUrl}/health`)).status === 200, 10_000, "drain cancelled", 50);
    // audio flowing on the new host before the next drain
    const framesNow = ps.map((p) => p.frames);
    await eventually(() => ps.every((p, i) => p.frames >= framesNow[i]! + 10), 5_000, "audio on the new host", 20).catch(() => undefined);
  }
  for (const p of ps) gaps.push(...p.nav.stats.moveGapsMs);
  await stopParticipants();

  // --- reunite after SIGKILL ---------------------------------------------------------------------
  const reuniteMs: number[] = [];
  let stuckKill: string | undefined;
  for (let k = 0; k < KILLS; k++) {
    try {
      const room = `bench-kill-${k}`;
      const kp = Array.from({ length: 5 }, (_, i) => new Participant(codec, l.libp2p, l, REGION, room, 300 + 60 * i));
      await Promise.all(kp.map((p) => p.join()));
      const victimPeer = kp[0]!.nav.host;
      const victim = byPeer(victimPeer)!;
      const idx = mixers.indexOf(victim);
      const t0 = performance.now();
      victim.proc.kill("SIGKILL");
      await eventually(() => kp.every((p) => p.lost > 0), 10_000, "sessions lost", 10);
      const lostMs = performance.now() - t0;
      await Promise.all(kp.map((p) => p.failover()));
      const hosts = new Set(kp.map((p) => p.nav.host));
      if (hosts.size !== 1 || hosts.has(victimPeer)) throw new Error(`after SIGKILL: hosts ${[...hosts].join(", ")}`);
      reuniteMs.push(performance.now() - t0);
      console.error(`kill ${k + 1}: every session lost after ${r0(lostMs)} ms, reunited in ${r0(performance.now() - t0)} ms`);
      await stopParticipants();
      victim.cleanup();
      mixers[idx] = await startNode({ args: mixerArgs, env: { AGORA_DASHBOARD_AUTH_TOKEN: TOKEN } });
      nodes.push(mixers[idx]!);
      ids[idx] = await mixers[idx]!.peerId();
      const t1 = performance.now();
      await eventually(
        async () => (await l.mixers(REGION)).some((m) => m.peer_id === ids[idx]),
        60_000,
        "the restarted mixer discoverable",
        500,
      );
      console.error(`kill ${k + 1}: the restarted mixer discoverable after ${r0(performance.now() - t1)} ms`);
    } catch (err) {
      // reported, not fatal: the figures so far still stand (a busy machine may not bring a mixer back in time)
      stuckKill = `kill ${k + 1}: ${err instanceof Error ? err.message : String(err)}`;
      console.error(stuckKill);
      break;
    }
  }

  console.log(`agora rooms bench (10 binary nodes on loopback, heartbeat ${HEARTBEAT_S} s)`);
  console.log("measure                         n     p50      p95/p99     target");
  console.log(
    `join by name (all)            ${String(allJoins.length).padStart(3)}  ${String(r0(pct(allJoins, 50))).padStart(6)} ms  p95 ${String(r0(pct(allJoins, 95))).padStart(5)} ms  p95 ≤ 1000 ms`,
  );
  console.log(
    `  new room (place + claim)    ${String(firstMs.length).padStart(3)}  ${String(r0(pct(firstMs, 50))).padStart(6)} ms  p95 ${String(r0(pct(firstMs, 95))).padStart(5)} ms`,
  );
  console.log(
    `  second joiner (resolve)     ${String(secondMs.length).padStart(3)}  ${String(r0(pct(secondMs, 50))).padStart(6)} ms  p95 ${String(r0(pct(secondMs, 95))).padStart(5)} ms`,
  );
  const phaseKeys = ["placeMs", "mixersMs", "resolveMs", "probeMs", "dialMs", "answerMs", "datagramsMs", "verifyMs"] as const;
  const phaseFigures: Record<string, { p50: number; p95: number }> = {};
  for (const k of phaseKeys) {
    const xs = phases.map((p) => p[k]).filter((x): x is number => x !== undefined);
    phaseFigures[k.replace(/Ms$/, "")] = { p50: r0(pct(xs, 50)), p95: r0(pct(xs, 95)) };
  }
  console.log(
    `  join phases p50/p95 ms: ${Object.entries(phaseFigures)
      .map(([k, v]) => `${k} ${v.p50}/${v.p95}`)
      .join(
        ", ",
      )}; placed by record ${phases.filter((p) => p.placedBy === "record").length}, by rule ${phases.filter((p) => p.placedBy === "rule").length}; redirects ${phases.reduce((n, p) => n + p.redirects, 0)}`,
  );
  console.log(
    `idle CPU, mixer process         ${String(mixerIdle.length).padStart(3)}  ${String(
      r1(
        pct(
          mixerIdle.map((x) => x.proc),
          50,
        ),
      ),
    ).padStart(
      6,
    )} %   max ${String(r1(Math.max(...mixerIdle.map((x) => x.proc)))).padStart(5)} %   (bootstrap ${r1(idlePct[0]!.proc)} %, mixer main threads p50 ${r1(
      pct(
        mixerIdle.map((x) => x.main),
        50,
      ),
    )} %)`,
  );
  console.log(
    `handover gap (${drains}/${DRAINS} drains)   ${String(gaps.length).padStart(3)}  ${String(r0(pct(gaps, 50))).padStart(6)} ms  p99 ${String(r0(pct(gaps, 99))).padStart(5)} ms  p99 ≤ 200 ms (dropped: ${dropped})`,
  );
  // One row per drain phase: the tail's cause (which phase) beside the gap it made.
  const phaseRow = (label: string, xs: number[]) =>
    console.log(
      `  ${label.padEnd(28)}${String(xs.length).padStart(3)}  ${String(r0(pct(xs, 50))).padStart(6)} ms  p99 ${String(r0(pct(xs, 99))).padStart(5)} ms`,
    );
  phaseRow(
    "MOVE → JOINED",
    movePhases.map((p) => p.joinMs),
  );
  phaseRow(
    "JOINED → first frame",
    movePhases.map((p) => p.firstFrameMs),
  );
  console.log(
    `reunite after SIGKILL (${reuniteMs.length}/${KILLS}) ${String(reuniteMs.length).padStart(3)}  ${String(r0(pct(reuniteMs, 50))).padStart(6)} ms  max ${String(r0(Math.max(...reuniteMs))).padStart(5)} ms  ≤ 5000 ms`,
  );
  Object.assign(out, {
    bench: "rooms",
    heartbeat_s: HEARTBEAT_S,
    join_by_name_ms: { n: allJoins.length, p50: r0(pct(allJoins, 50)), p95: r0(pct(allJoins, 95)) },
    join_new_room_ms: { p50: r0(pct(firstMs, 50)), p95: r0(pct(firstMs, 95)) },
    join_existing_room_ms: { p50: r0(pct(secondMs, 50)), p95: r0(pct(secondMs, 95)) },
    join_phases_ms: phaseFigures,
    join_placed_by: {
      record: phases.filter((p) => p.placedBy === "record").length,
      rule: phases.filter((p) => p.placedBy === "rule").length,
      redirects: phases.reduce((n, p) => n + p.redirects, 0),
    },
    idle_cpu_percent: {
      seconds: IDLE_S,
      settle_seconds: IDLE_SETTLE_S,
      bootstrap: r1(idlePct[0]!.proc),
      mixers_p50: r1(
        pct(
          mixerIdle.map((x) => x.proc),
          50,
        ),
      ),
      mixers_max: r1(Math.max(...mixerIdle.map((x) => x.proc))),
      mixer_main_threads_p50: r1(
        pct(
          mixerIdle.map((x) => x.main),
          50,
        ),
      ),
      per_mixer: mixerIdle.map((x) => r1(x.proc)),
    },
    join_splits: splits,
    split_heal_ms: { n: splitHealMs.length, p50: r0(pct(splitHealMs, 50)), max: r0(Math.max(...splitHealMs)) },
    mixers_discovered: seen,
    stuck_drain: stuckDrain ?? null,
    stuck_kill: stuckKill ?? null,
    load_average: (await import("node:os")).loadavg().map((x) => Math.round(x * 100) / 100),
    handover_gap_ms: {
      drains,
      drains_requested: DRAINS,
      n: gaps.length,
      p50: r0(pct(gaps, 50)),
      p99: r0(pct(gaps, 99)),
      max: r0(Math.max(...gaps)),
      dropped,
      lost_between_drains: lostBetweenDrains,
      move_to_joined_p99: r0(
        pct(
          movePhases.map((p) => p.joinMs),
          99,
        ),
      ),
      joined_to_first_frame_p99: r0(
        pct(
          movePhases.map((p) => p.firstFrameMs),
          99,
        ),
      ),
    },
    reunite_ms: { n: reuniteMs.length, kills_requested: KILLS, p50: r0(pct(reuniteMs, 50)), max: r0(Math.max(...reuniteMs)) },
  });
  console.log(JSON.stringify(out));
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? err.stack : String(err)}`);
  exitCode = 1;
} finally {
  await stopParticipants();
  await locator?.stop().catch(() => {});
  for (const n of nodes) n.cleanup();
}
process.exit(exitCode);
