/**
 * AudioRoomService and the 1.1.0 voice-activity and personal-mix messages: negotiated on 1.1.0 only, the
 * flag reaches the engine, MIX_SETTINGS becomes an engine call, bad or unwanted input is counted and
 * closes only the offending stream.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import type { AudioFrame } from "../../src/audio";
import { AudioSession } from "../../src/client";
import { silentLogger } from "../../src/log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOL_1_1,
  Capability,
  encodeAudio,
  encodeMessage,
  WireErrorCode,
  type WireMessage,
} from "../../src/protocol";
import { AudioRoomService } from "../../src/rooms";
import {
  createBareClientNode,
  createServerNode,
  FakeMediaEngine,
  metricValue,
  OPUS_TOC_20MS,
  openRaw,
  waitFor,
} from "../helpers/net-fakes";

setDefaultTimeout(20_000);

let server: Libp2p;
let addr: Multiaddr;
let client: Libp2p;
let engine: FakeMediaEngine;
let registry: Registry;
let service: AudioRoomService;

beforeEach(async () => {
  ({ node: server, addr } = await createServerNode());
  client = await createBareClientNode();
  engine = new FakeMediaEngine();
  registry = new Registry();
  service = new AudioRoomService({ libp2p: server, engine, registry, logger: silentLogger() });
  await service.start();
});

afterEach(async () => {
  await service.stop();
  await client.stop();
  await server.stop();
});

function frame(seq: number, voice?: boolean): AudioFrame {
  const payload = new Uint8Array(20).fill(seq & 0xff);
  payload[0] = OPUS_TOC_20MS;
  return { seq, timestamp: (seq * 960) >>> 0, payload, ...(voice !== undefined ? { voice } : {}) };
}

async function joinRaw(protocol: string, room: string, capabilities?: number) {
  const raw = await openRaw(client, addr, protocol);
  raw.send(
    encodeMessage({
      type: "JOIN",
      version: protocol === AUDIO_PROTOCOL ? 1 : 2,
      room,
      name: "",
      ...(capabilities !== undefined ? { capabilities } : {}),
    }),
  );
  await waitFor(() => raw.messages.some((m) => m.type === "JOINED"), "JOINED");
  const joined = raw.messages.find((m): m is Extract<WireMessage, { type: "JOINED" }> => m.type === "JOINED")!;
  return { raw, joined };
}

async function expectClosedWith(raw: Awaited<ReturnType<typeof openRaw>>, code: number): Promise<void> {
  await waitFor(() => raw.isClosed(), "stream to be closed");
  const err = raw.messages.find((m): m is Extract<WireMessage, { type: "ERROR" }> => m.type === "ERROR");
  expect(err?.code).toBe(code);
}

describe("voice activity", () => {
  test("JOINED offers VOICE_ACTIVITY and PERSONAL_MIX; AUDIO_VAD's flag reaches the engine", async () => {
    const { raw, joined } = await joinRaw(AUDIO_PROTOCOL_1_1, "vad", Capability.VOICE_ACTIVITY);
    expect((joined.capabilities ?? 0) & Capability.VOICE_ACTIVITY).toBe(Capability.VOICE_ACTIVITY);
    expect((joined.capabilities ?? 0) & Capability.PERSONAL_MIX).toBe(Capability.PERSONAL_MIX);
    raw.send(encodeAudio(frame(1, true)));
    raw.send(encodeAudio(frame(2, false)));
    raw.send(encodeAudio(frame(3)));
    await waitFor(() => engine.pushed.length >= 3, "three frames in the engine");
    expect(engine.pushed.map((p) => p.frame.voice)).toEqual([true, false, undefined]);
    expect(raw.isClosed()).toBe(false);
  });

  test("AUDIO_VAD without the negotiated capability (or on 1.0.0) is UNEXPECTED_MESSAGE; others are unaffected", async () => {
    const good = await joinRaw(AUDIO_PROTOCOL_1_1, "vad2", Capability.VOICE_ACTIVITY);
    const noCap = await joinRaw(AUDIO_PROTOCOL_1_1, "vad2", 0);
    noCap.raw.send(encodeAudio(frame(1, true)));
    await expectClosedWith(noCap.raw, WireErrorCode.UNEXPECTED_MESSAGE);
    const v1 = await joinRaw(AUDIO_PROTOCOL, "vad2");
    v1.raw.send(encodeAudio(frame(1, false)));
    await expectClosedWith(v1.raw, WireErrorCode.UNEXPECTED_MESSAGE);
    expect(await metricValue(registry, "agora_audio_stream_errors_total", { reason: "unexpected_message" })).toBe(2);
    good.raw.send(encodeAudio(frame(5, true)));
    await waitFor(() => engine.pushed.some((p) => p.frame.seq === 5), "the good participant's frame");
    expect(good.raw.isClosed()).toBe(false);
  });

  test("the SDK session sends the flag only where it was negotiated", async () => {
    const withCap = await AudioSession.open({ libp2p: client, target: addr, room: "sdk", capabilities: Capability.VOICE_ACTIVITY });
    const without = await AudioSession.open({ libp2p: client, target: addr, room: "sdk" });
    withCap.sendAudio(frame(10, false));
    without.sendAudio(frame(20, false));
    await waitFor(() => engine.pushed.length >= 2, "both frames");
    const bySeq = new Map(engine.pushed.map((p) => [p.frame.seq, p.frame.voice]));
    expect(bySeq.get(10)).toBe(false);
    expect(bySeq.get(20)).toBeUndefined(); // plain AUDIO: the stream stays open
    expect(without.isOpen).toBe(true);
    await withCap.leave();
    await without.leave();
  });
});

describe("MIX_SETTINGS", () => {
  test("applied through the engine for the sender only; unknown ids are counted, the rest applied", async () => {
    const a = await AudioSession.open({ libp2p: client, target: addr, room: "mix", capabilities: Capability.PERSONAL_MIX });
    const b = await AudioSession.open({ libp2p: client, target: addr, room: "mix", capabilities: Capability.PERSONAL_MIX });
    a.sendMixSettings([{ participantId: b.participantId, gain: 0 }]);
    await waitFor(() => engine.mixCalls.length >= 1, "the engine call");
    expect(engine.mixCalls[0]).toEqual({
      kind: "gains",
      room: "mix",
      participant: a.participantId,
      value: [{ participantId: b.participantId, gain: 0 }],
    });
    expect(await metricValue(registry, "agora_audio_net_mix_settings_total", { result: "applied" })).toBe(1);
    await Bun.sleep(250); // past the 5/s rate, so the next one is applied at once
    a.sendMixSettings([
      { participantId: "pnobody", gain: 0.5 },
      { participantId: b.participantId, gain: 2 },
    ]);
    await waitFor(() => engine.mixCalls.length >= 2, "the second engine call");
    expect(await metricValue(registry, "agora_audio_net_mix_settings_total", { result: "unknown_participant" })).toBe(1);
    expect(a.isOpen).toBe(true);
    await a.leave();
    await b.leave();
  });

  test("a burst is coalesced: the latest settings are applied, the ones in between skipped and counted", async () => {
    const a = await AudioSession.open({ libp2p: client, target: addr, room: "burst", capabilities: Capability.PERSONAL_MIX });
    const b = await AudioSession.open({ libp2p: client, target: addr, room: "burst", capabilities: Capability.PERSONAL_MIX });
    for (let i = 0; i <= 20; i++) a.sendMixSettings([{ participantId: b.participantId, gain: i / 10 }]);
    await waitFor(() => engine.mixCalls.some((c) => JSON.stringify(c.value).includes('"gain":2}')), "the latest settings");
    expect(engine.mixCalls.length).toBeLessThan(5);
    expect(await metricValue(registry, "agora_audio_net_mix_settings_total", { result: "coalesced" })).toBeGreaterThan(15);
    await a.leave();
    await b.leave();
  });

  test("without PERSONAL_MIX the SDK refuses, and a raw MIX_SETTINGS is UNEXPECTED_MESSAGE", async () => {
    const s = await AudioSession.open({ libp2p: client, target: addr, room: "nomix" });
    expect(() => s.sendMixSettings([])).toThrow(/PERSONAL_MIX/);
    await s.leave();
    const { raw } = await joinRaw(AUDIO_PROTOCOL_1_1, "nomix", Capability.VOICE_ACTIVITY);
    raw.send(encodeMessage({ type: "MIX_SETTINGS", gains: [] }));
    await expectClosedWith(raw, WireErrorCode.UNEXPECTED_MESSAGE);
    expect(engine.mixCalls).toHaveLength(0);
  });

  test("a malformed MIX_SETTINGS closes only its stream with MALFORMED (bad_field)", async () => {
    const { raw } = await joinRaw(AUDIO_PROTOCOL_1_1, "bad", Capability.PERSONAL_MIX);
    const other = await joinRaw(AUDIO_PROTOCOL_1_1, "bad", Capability.PERSONAL_MIX);
    raw.send(Uint8Array.from([0x00, 0x08, 0x31, 0x00, 0x01, 0x02, 0x70, 0x61, 0x0f, 0xa1])); // gain 4001: above +12 dB
    await expectClosedWith(raw, WireErrorCode.MALFORMED);
    expect(await metricValue(registry, "agora_audio_stream_errors_total", { reason: "bad_field" })).toBe(1);
    expect(other.raw.isClosed()).toBe(false);
  });
});
