/**
 * "Mute X for me" through the compiled binary: three talkers send tones (A 440 Hz, B 660 Hz, X 880 Hz) with
 * the SDK's voice-activity flags, two silent listeners (flagged silent: their frames are not decoded by the
 * mixer) decode what they receive. Listener L mutes X for itself with MIX_SETTINGS; L's mix must lack X
 * (≥ 26 dB below A and B) while listener M and talker A still hear X.
 *
 * Real time (the node mixes on its own clock). Busy-machine tolerances: wide jitter buffers in the node
 * (100-600 ms) so late ticks cost latency rather than dropouts; recordings start when a condition holds
 * (frames received after the settings were applied), never at fixed times; the analysis compares tones
 * within one recording, so an occasional concealed frame lowers every tone alike.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import { joinRoom, type RoomConnection } from "../../src/client";
import { createBareClientNode, db, goertzelPower } from "../helpers/net-fakes";
import { eventually, type NodeHandle, startNode } from "../helpers/node-process";

setDefaultTimeout(120_000);

const FRAME = 960;
const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});

function toneFrame(hz: number, k: number, amplitude = 8000): Int16Array {
  const out = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * hz * (k * FRAME + i)) / 48_000));
  return out;
}

/** Sends `frame(k)` every 20 ms by the wall clock (catching up after a late timer), until stopped. */
function pace(conn: RoomConnection, frame: (k: number) => Int16Array): () => void {
  const t0 = performance.now();
  let k = 0;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const due = Math.floor((performance.now() - t0) / 20);
      // After a long stall, skip ahead rather than burst more than 10 frames.
      if (due - k > 10) k = due - 10;
      while (k <= due && conn.isOpen) await conn.sendPcm(frame(k++));
    } finally {
      busy = false;
    }
  }, 10);
  return () => clearInterval(timer);
}

/** Collects the decoded mix a connection receives while `on` is true. */
function recorder(conn: RoomConnection) {
  const frames: Int16Array[] = [];
  let on = false;
  let total = 0;
  conn.on("pcm", ({ pcm }) => {
    total++;
    if (on) frames.push(pcm);
  });
  return {
    start() {
      on = true;
    },
    stop() {
      on = false;
    },
    get count() {
      return frames.length;
    },
    get total() {
      return total;
    },
    samples(): Int16Array {
      const out = new Int16Array(frames.length * FRAME);
      for (const [i, f] of frames.entries()) out.set(f, i * FRAME);
      return out;
    },
  };
}

async function metric(h: NodeHandle, name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("per-listener mix through the binary", () => {
  test("mute X for me: X is ≥ 26 dB below the others in my mix, still present in everyone else's", async () => {
    const h = await startNode({ args: ["--set", "audio.jitter_min_ms=100", "--set", "audio.jitter_max_ms=600"] });
    started.push(h);
    const node = await h.multiaddr();
    const client: Libp2p = await createBareClientNode();
    const stops: Array<() => void> = [];
    const conns: RoomConnection[] = [];
    try {
      const join = async (name: string) => {
        const c = await joinRoom({ node, room: "mute-for-me", name, libp2p: client, decode: true, timeoutMs: 20_000 });
        conns.push(c);
        return c;
      };
      const a = await join("a");
      const b = await join("b");
      const x = await join("x");
      const l = await join("l");
      const m = await join("m");
      expect(l.personalMix).toBe(true);
      const tones = new Map([
        [a, 440],
        [b, 660],
        [x, 880],
      ]);
      for (const [c, hz] of tones) stops.push(pace(c, (k) => toneFrame(hz, k)));
      const silence = new Int16Array(FRAME);
      for (const c of [l, m]) stops.push(pace(c, () => silence));
      const recL = recorder(l);
      const recM = recorder(m);
      const recA = recorder(a);

      // Everyone hears all three before the setting (wait until the mixes carry audio).
      await eventually(() => recL.total > 50 && recM.total > 50, 30_000, "listeners receiving the mix");
      l.muteFor(x.participantId);
      expect(l.mixSettings().get(x.participantId)).toBe(0);
      await eventually(
        async () => (await metric(h, "agora_audio_net_mix_settings_total", 'result="applied"')) === 1,
        20_000,
        "the node to apply the mix settings",
      );
      // Past the node's jitter buffer and the listeners' playout: frames mixed after the change.
      const after = recL.total + 50;
      await eventually(() => recL.total >= after, 30_000, "frames mixed after the setting");
      recL.start();
      recM.start();
      recA.start();
      await eventually(() => recL.count >= 150 && recM.count >= 150 && recA.count >= 150, 60_000, "3 s of every mix");
      recL.stop();
      recM.stop();
      recA.stop();

      const level = (x: Int16Array, hz: number) => db(goertzelPower(x, hz));
      const L = recL.samples();
      const M = recM.samples();
      const A = recA.samples();
      const show = (n: string, s: Int16Array) => [440, 660, 880].map((hz) => `${n}${hz}:${level(s, hz).toFixed(1)}`).join(" ");
      console.log(`levels (dB): ${show("L", L)} ${show("M", M)} ${show("A", A)}`);
      // My mix: A and B, X at least 26 dB below the weaker of them.
      expect(Math.min(level(L, 440), level(L, 660)) - level(L, 880)).toBeGreaterThan(26);
      // Everyone else still hears X, far above what reaches me, and near the others: within 20 dB, since on
      // a busy machine each talker's own late frames (concealed, then silent) lower its tone differently.
      expect(level(M, 880)).toBeGreaterThan(level(M, 660) - 20);
      expect(level(A, 880)).toBeGreaterThan(level(A, 660) - 20);
      expect(level(M, 880) - level(L, 880)).toBeGreaterThan(26);
      // My mix is not quieter overall: A and B as loud as in M's mix.
      expect(Math.abs(level(L, 440) - level(M, 440))).toBeLessThan(3);
    } finally {
      for (const s of stops) s();
      for (const c of conns) await c.leave().catch(() => {});
      await client.stop();
      await h.stop();
    }
  });
});
