/**
 * The participant SDK: everything a program needs to take part in Agora rooms, importable without a node.
 *
 *   const [best] = await discover({ bootstrap: ["/ip4/…/tcp/7001/p2p/12D3KooW…"], region: "eu-west" });
 *   const room = await joinRoom({ node: best.addrs[0], room: "standup", decode: true });
 *   room.on("pcm", ({ pcm }) => play(pcm));
 *   await room.sendPcm(twentyMsOfSamples);
 *   await room.leave();
 *
 * Lower layers for tools: AudioSession (one protocol session), runJoinClient (a whole call from and to
 * WAV files, with reconnects: the `join` command), runLoadgen (many synthetic participants), WAV I/O.
 * The node's network subsystem is loaded only when discover() is called, and the wasm codec only when
 * PCM is sent or decoded.
 */
import { AgoraError } from "../errors";
import { type Logger, silentLogger } from "../log";

export { AgoraError, type ErrorCode } from "../errors";
export type { AudioFrame, JoinedMessage, OpusCodec, OpusDecoder, OpusEncoder } from "../protocol";
export { AUDIO_PROTOCOL, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, WireErrorCode } from "../protocol";
export { type Clock, every, realClock, type TimerHandle } from "./clock";
export { loadOpusCodec } from "./codec";
export { type Listener, SafeEmitter } from "./events";
export { type JoinClientOptions, type JoinClientReport, type ReconnectOptions, runJoinClient, type SimulateOptions } from "./join";
export {
  type LatencySummary,
  LOADGEN_CONNECTIONS,
  type LoadgenConnections,
  type LoadgenCounts,
  type LoadgenOptions,
  type LoadgenPhase,
  type LoadgenReport,
  type LoadgenRoomReport,
  type LoadgenRoomSpec,
  OnsetDetector,
  runLoadgen,
  summarize,
} from "./loadgen";
export { lossPercent, ReceiveLoss, type ReceiveLossFigures } from "./loss";
export { type ClientNodeOptions, createClientNode, type DialTarget, type DialTargetProvider } from "./node";
export { PlayoutBuffer } from "./playout";
export { seededRandom } from "./random";
export { type JoinRoomOptions, joinRoom, RoomConnection, type RoomEvents } from "./room";
export { AudioRedirectError, AudioRemoteError, AudioSession, type AudioSessionOptions } from "./session";
export { PacedTimer, sleep } from "./timing";
export {
  type DecodedWav,
  decodeWav,
  downmix,
  encodeWav,
  readWav,
  resample,
  WAV_TARGET_RATE,
  WavError,
  type WavInfo,
  WavWriter,
  writeWav,
} from "./wav";

export interface DiscoverOptions {
  /** multiaddrs of any nodes of the network (…/p2p/<peer id>) */
  bootstrap: string[];
  region?: string;
  /** "mixer" for rooms, "relay" for circuit relays */
  capability?: string;
  group?: string;
  limit?: number;
  /** overall bound (default 10 s) */
  timeoutMs?: number;
  logger?: Logger;
}

/** A node found by discover(), best first: its addresses, region, load and measured latency. */
export type DiscoveredNode = Awaited<ReturnType<typeof import("../p2p").discoverOnce>>[number];

/** Finds live nodes through the DHT, verified and ranked by latency and load. */
export async function discover(opts: DiscoverOptions): Promise<DiscoveredNode[]> {
  if (opts.bootstrap.length === 0) throw new AgoraError("USAGE", "discover: give at least one bootstrap address");
  const { discoverOnce } = await import("../p2p");
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return discoverOnce({
    bootstrap: opts.bootstrap,
    logger: opts.logger ?? silentLogger(),
    timeoutMs,
    query: { region: opts.region, capability: opts.capability ?? "mixer", group: opts.group, limit: opts.limit, timeoutMs },
  });
}
