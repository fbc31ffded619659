/**
 * bench/udp-flood: an honest participant's audio gap while garbage floods the node's voice datagram port
 * (issue 13 target: ≤ 60 ms at 100,000 datagrams/s).
 *
 *   bun bench/udp-flood.ts [--rate 100000] [--seconds 5] [--pairs 2]
 *
 * The compiled node on 127.0.0.1; `pairs` rooms of two participants on datagrams, each sending a tone and
 * decoding the other's (test/helpers/tone-participant.ts). The longest time one of them goes without hearing
 * the other is measured for `seconds` without the flood, then during a flood from another process
 * (test/rooms/fixtures/udp-flood.ts: random bytes, right-looking datagrams with random session ids, and
 * forged ones for a real session id from a foreign source). The node's drop counters by reason are read
 * after. On a 2-core machine the flooder takes a core of its own: run it on a quiet machine. Prints a
 * table, then ONE JSON line.
 */
import { join } from "node:path";
import { createClientNode, loadOpusCodec } from "../src/client";
import { DATAGRAM_DROP_REASONS } from "../src/protocol";
import { ROOT, startNode } from "../test/helpers/node-process";
import { type ToneParticipant, toneParticipant } from "../test/helpers/tone-participant";
import { positiveArg } from "./args";
import { metricValue } from "./node-load";

const rate = positiveArg("rate", 100_000);
const seconds = positiveArg("seconds", 5);
const pairs = Math.round(positiveArg("pairs", 2));

async function metrics(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = {};
  for (const reason of DATAGRAM_DROP_REASONS) out[reason] = metricValue(text, "agora_audio_udp_dropped_total", `reason="${reason}"`);
  return out;
}

const worstGap = (ps: ToneParticipant[], from: number, to: number) => Math.max(...ps.map((p) => p.maxUnheard(from, to)));

const node = await startNode();
const libp2p = await createClientNode();
const codec = await loadOpusCodec();
const participants: ToneParticipant[] = [];
let result: Record<string, unknown> = {};
try {
  const addr = await node.multiaddr();
  for (let i = 0; i < pairs; i++) {
    participants.push(await toneParticipant(codec, libp2p, addr, `flood-${i}`, 440, 1000, { transport: "udp" }));
    participants.push(await toneParticipant(codec, libp2p, addr, `flood-${i}`, 1000, 440, { transport: "udp" }));
  }
  const deadline = performance.now() + 20_000;
  while (!participants.every((p) => p.session.uplinkPath === "udp" && p.toneDb() > 15)) {
    if (performance.now() > deadline) throw new Error("participants did not reach datagrams and hear each other within 20 s");
    await Bun.sleep(100);
  }
  const before = await metrics(node.metricsUrl);
  const baseFrom = performance.now();
  await Bun.sleep(seconds * 1000);
  const floodFrom = performance.now();
  const flooder = Bun.spawn(
    [
      process.execPath,
      join(ROOT, "test", "rooms", "fixtures", "udp-flood.ts"),
      "127.0.0.1",
      String(node.p2pPort),
      String(rate),
      String(seconds),
      String(participants[0]!.session.joined.udp!.sessionId),
    ],
    { stdout: "pipe", stderr: "inherit" },
  );
  await flooder.exited;
  const floodTo = performance.now();
  const report = JSON.parse((await new Response(flooder.stdout).text()).trim()) as { sent: number; seconds: number };
  const after = await metrics(node.metricsUrl);
  const dropped: Record<string, number> = {};
  for (const r of DATAGRAM_DROP_REASONS) if (after[r]! - before[r]! > 0) dropped[r] = after[r]! - before[r]!;
  const counted = Object.values(dropped).reduce((a, b) => a + b, 0);
  result = {
    bench: "udp-flood",
    pairs,
    targetRate: rate,
    floodRate: Math.round(report.sent / report.seconds),
    floodSent: report.sent,
    droppedCounted: counted,
    dropped,
    baselineGapMs: Math.round(worstGap(participants, baseFrom, floodFrom)),
    floodGapMs: Math.round(worstGap(participants, floodFrom, floodTo)),
    stillOnUdp: participants.every((p) => p.session.uplinkPath === "udp"),
    targetMet: worstGap(participants, floodFrom, floodTo) <= 60,
  };
} finally {
  for (const p of participants) p.stop();
  await libp2p.stop();
  await node.stop();
  node.cleanup();
}
console.log(`udp-flood: ${pairs} pair(s) of participants on datagrams; ${seconds} s quiet, then ${seconds} s of garbage`);
console.log("phase     datagrams/s  longest unheard gap ms");
console.log(`quiet     ${"0".padStart(11)}  ${String(result.baselineGapMs).padStart(22)}`);
console.log(`flood     ${String(result.floodRate).padStart(11)}  ${String(result.floodGapMs).padStart(22)}`);
console.log(`counted ${result.droppedCounted} of ${result.floodSent} sent (the rest overflowed the socket buffer):`, result.dropped);
console.log(JSON.stringify(result));
