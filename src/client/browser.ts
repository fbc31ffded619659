/**
 * The participant SDK in a browser (bundle with `bun build --target browser`): the same joinRoom /
 * RoomConnection / AudioSession as src/client/index.ts over a browser libp2p node (WebSockets, stock noise
 * and yamux) and the wasm libopus fetched beside the bundle.
 *
 *   const room = await joinRoom({ node: "/ip4/203.0.113.7/tcp/7002/ws/p2p/12D3KooW…", room: "standup", decode: true });
 *   room.on("pcm", ({ pcm }) => play(pcm));
 *   await room.sendPcm(twentyMsOfSamples); // Int16Array(960), 48 kHz mono
 *   await room.leave();
 *
 * Not here (node-only): discover() through the DHT, runJoinClient (WAV files), runLoadgen.
 */

import { AgoraError } from "../errors";
import { loadBrowserOpusCodec } from "./browser-codec";
import { createBrowserNode } from "./browser-node";
import { installClientPlatform } from "./platform";

installClientPlatform({
  name: "browser",
  createNode: createBrowserNode,
  loadCodec: loadBrowserOpusCodec,
  createRoomLocator: () => {
    throw new AgoraError("USAGE", "join by name needs a DHT client, which the browser SDK does not have: give `node` (or a `locator`)");
  },
});

export { AgoraError, type ErrorCode } from "../errors";
export type { AudioFrame, JoinedMessage, OpusCodec, OpusDecoder, OpusEncoder } from "../protocol";
export { AUDIO_PROTOCOL, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, WireErrorCode } from "../protocol";
export { defaultMediaCoreUrl, loadBrowserOpusCodec as loadOpusCodec, type MediaCoreSource, setMediaCoreSource } from "./browser-codec";
export { createBrowserNode } from "./browser-node";
export { type Clock, every, realClock, type TimerHandle } from "./clock";
export { type Listener, SafeEmitter } from "./events";
export { lossPercent, ReceiveLoss, type ReceiveLossFigures } from "./loss";
export { type ClientPlatform, clientPlatform } from "./platform";
export { PlayoutBuffer } from "./playout";
export { type JoinRoomOptions, joinRoom, type MovedEvent, RoomConnection, type RoomEvents } from "./room";
export { type Participant, RosterView } from "./roster";
export { AudioRedirectError, AudioRemoteError, AudioSession, type AudioSessionOptions } from "./session";
export type { DialTarget, DialTargetProvider } from "./target";
