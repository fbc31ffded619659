/**
 * The participant SDK: everything a program needs to take part in Agora rooms, importable without a node.
 *
 *   const [best] = await discover({ bootstrap: ["/ip4/…/tcp/7001/p2p/12D3KooW…"], region: "eu-west" });
 *   const room = await joinRoom({ node: `${best.advertisement.listen_addr[0]}/p2p/${best.advertisement.peer_id}`, room: "standup", decode: true });
 *   room.on("pcm", ({ pcm }) => play(pcm));
 *   await room.sendPcm(twentyMsOfSamples);
 *   await room.leave();
 *
 *   const where = await resolveRoom({ bootstrap, room: "standup" });   // its host, from the room record
 *
 * Lower layers for tools: AudioSession (one protocol session), runJoinClient (a whole call from and to
 * WAV files, with reconnects: the `join` command), runLoadgen (many synthetic participants), WAV I/O.
 * The node's network subsystem is loaded only when discover() or resolveRoom() is called, and the wasm codec
 * only when PCM is sent or decoded.
 */
import { AgoraError } from "../errors";
import { type Logger, silentLogger } from "../log";
import { loadOpusCodec } from "./codec";
import { createClientNode } from "./node";
import { installClientPlatform } from "./platform";

// Bun and Node: TCP with agora-node's noise/yamux, the media core read from disk (browser.ts has the other).
installClientPlatform({
  name: "native",
  createNode: (privateKey) => createClientNode(privateKey ? { privateKey } : {}),
  loadCodec: loadOpusCodec,
  createRoomLocator: async (bootstrap) => {
    const { createRoomLocator } = await import("../p2p");
    return createRoomLocator({ bootstrap, logger: silentLogger() });
  },
});

export {
  grantFromString,
  grantToString,
  issueGrant,
  ownedRoomId,
  Role,
  type RoleName,
  roleFromName,
  signerFromRawPrivateKey,
} from "../access";
export { AgoraError, type ErrorCode } from "../errors";
export type { AudioFrame, JoinedMessage, OpusCodec, OpusDecoder, OpusEncoder } from "../protocol";
export { AUDIO_PROTOCOL, FRAME_MS, FRAME_SAMPLES, ModerateAction, type ModerateActionName, SAMPLE_RATE, WireErrorCode } from "../protocol";
export { type Clock, every, realClock, type TimerHandle } from "./clock";
export { loadOpusCodec } from "./codec";
export { type Listener, SafeEmitter } from "./events";
export { type JoinClientOptions, type JoinClientReport, type ReconnectOptions, runJoinClient, type SimulateOptions } from "./join";
export {
  BURST_SYMBOL_FREQS,
  type BurstBoundary,
  BurstBoundaryDetector,
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
export {
  hostTargets,
  type LocatedRoom,
  type MixerCandidate,
  type NavigatedSessionOptions,
  type NavigatorStats,
  type OpenPhases,
  PlacementRefusedError,
  type RoomLocator,
  RoomNavigator,
  type RoomNavigatorOptions,
} from "./navigator";
export { type ClientNodeOptions, createClientNode, type DialTarget, type DialTargetProvider } from "./node";
export { type ClientPlatform, clientPlatform, installClientPlatform } from "./platform";
export { PlayoutBuffer } from "./playout";
export { seededRandom } from "./random";
export {
  DEFAULT_ROOM_CAPABILITIES,
  type JoinRoomOptions,
  joinRoom,
  type ModerationOutcome,
  type MovedEvent,
  RoomConnection,
  type RoomEvents,
} from "./room";
export { type Participant, type RosterChange, RosterView } from "./roster";
export {
  AudioRedirectError,
  AudioRemoteError,
  AudioSession,
  type AudioSessionOptions,
  VOICE_TRANSPORTS,
  type VoicePath,
  type VoiceTransport,
} from "./session";
export { PacedTimer, sleep } from "./timing";
export { VOICE_GATE_DB, VoiceGate } from "./vad";
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

export interface ResolveRoomOptions {
  /** multiaddrs of any nodes of the network (…/p2p/<peer id>) */
  bootstrap: string[];
  room: string;
  /** overall bound (default 10 s) */
  timeoutMs?: number;
  logger?: Logger;
}

/** A room's record (docs/room-record.md): its host's peer id and addresses, region, epoch, participants. */
export type RoomLocation = NonNullable<Awaited<ReturnType<typeof import("../p2p").resolveRoomOnce>>>;

/**
 * Where a room lives: its best live record in the DHT (verified: signed by the host it names, fresh), or
 * undefined when no mixer hosts it now. Dial `${addrs[0]}/p2p/${host}` to join it.
 */
export async function resolveRoom(opts: ResolveRoomOptions): Promise<RoomLocation | undefined> {
  if (opts.bootstrap.length === 0) throw new AgoraError("USAGE", "resolveRoom: give at least one bootstrap address");
  const { resolveRoomOnce } = await import("../p2p");
  return resolveRoomOnce({
    bootstrap: opts.bootstrap,
    room: opts.room,
    logger: opts.logger ?? silentLogger(),
    timeoutMs: opts.timeoutMs ?? 10_000,
  });
}
