import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  DATAGRAM_TIMING,
  DatagramDirection,
  datagramKey,
  datagramNonce,
  decodeMessage,
  encodeMessage,
  HEALTHY_REPORT_INTERVAL_MS,
  isIpLiteral,
  MAX_DATAGRAM_BYTES,
  MIN_DATAGRAM_BYTES,
  openDatagram,
  parseDatagramHeader,
  ReplayWindow,
  sealDatagram,
  UdpReportSchedule,
  UdpSendPolicy,
} from "../../src/protocol";

const RAW_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const key = datagramKey(RAW_KEY);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const header = { flags: 1, sessionId: 0x01020304, counter: 5, seq: 7, timestamp: 6720 };

describe("datagram test vectors (protocol.md)", () => {
  test("audio, client to server: key 00..1f, counter 5", () => {
    const d = sealDatagram(key, DatagramDirection.CLIENT_TO_SERVER, header, Uint8Array.of(0xf8, 1, 2, 3));
    expect(hex(d)).toBe("a1" + "01" + "01020304" + "00000005" + "00000007" + "00001a40" + "36998138" + "8a5ec141bbbf78de5dbbe8be0f80f84d");
  });

  test("keepalive, server to client: counter 0", () => {
    const d = sealDatagram(
      key,
      DatagramDirection.SERVER_TO_CLIENT,
      { flags: 2, sessionId: 0x01020304, counter: 0, seq: 0, timestamp: 0 },
      new Uint8Array(0),
    );
    expect(hex(d)).toBe("a10201020304000000000000000000000000654c3280cb637f4356b8fa303f8c8365");
  });

  test("nonce: direction byte, 7 zero bytes, counter", () => {
    expect(hex(datagramNonce(DatagramDirection.CLIENT_TO_SERVER, 5))).toBe("430000000000000000000005");
    expect(hex(datagramNonce(DatagramDirection.SERVER_TO_CLIENT, 0xffffffff))).toBe("5300000000000000ffffffff");
  });

  test("UDP_REPORT and the JOINED UDP offer", () => {
    expect(hex(encodeMessage({ type: "UDP_REPORT", received: 258 }))).toBe("00052000000102");
    const joined = encodeMessage({
      type: "JOINED",
      version: 2,
      participantId: "p1",
      sampleRate: 48000,
      channels: 1,
      frameSamples: 960,
      codec: 1,
      bitrate: 32000,
      serverTimeMs: 0,
      capabilities: 2,
      udp: { sessionId: 0x01020304, port: 7001, key: RAW_KEY, addrs: ["10.0.0.1"] },
    });
    // tag 0x10, length 48: session id, port 7001, key, one address of 8 bytes
    const offer = `10003001020304${"1b59"}${hex(RAW_KEY)}0108${hex(new TextEncoder().encode("10.0.0.1"))}`;
    expect(hex(joined).endsWith(offer)).toBe(true);
    const back = decodeMessage(joined.subarray(2));
    expect(back.ok).toBe(true);
    if (back.ok && back.value.type === "JOINED") {
      expect(back.value.udp?.sessionId).toBe(0x01020304);
      expect(back.value.udp?.port).toBe(7001);
      expect(hex(back.value.udp!.key)).toBe(hex(RAW_KEY));
      expect(back.value.udp?.addrs).toEqual(["10.0.0.1"]);
    }
  });
});

describe("seal and open", () => {
  const payload = Uint8Array.of(0xf8, 9, 9, 9, 9);
  const sealed = () => sealDatagram(key, DatagramDirection.CLIENT_TO_SERVER, header, payload);

  test("round trip", () => {
    const d = sealed();
    const h = parseDatagramHeader(d);
    expect(h).toEqual(header);
    expect(hex(openDatagram(key, DatagramDirection.CLIENT_TO_SERVER, d, 5)!)).toBe(hex(payload));
  });

  test("a wrong key, the other direction, a changed header or ciphertext do not open", () => {
    const other = datagramKey(new Uint8Array(32).fill(7));
    expect(openDatagram(other, DatagramDirection.CLIENT_TO_SERVER, sealed(), 5)).toBeUndefined();
    expect(openDatagram(key, DatagramDirection.SERVER_TO_CLIENT, sealed(), 5)).toBeUndefined();
    for (const at of [1, 2, 6, 10, 14, 18, 22]) {
      const d = sealed();
      d[at]! ^= 0x01;
      const counter = (parseDatagramHeader(d) as { counter: number }).counter ?? 5;
      expect(openDatagram(key, DatagramDirection.CLIENT_TO_SERVER, d, counter)).toBeUndefined();
    }
  });

  test("nonces never repeat over a session's counters and differ between directions", () => {
    const seen = new Set<string>();
    for (let c = 0; c < 5000; c++)
      for (const dir of [DatagramDirection.CLIENT_TO_SERVER, DatagramDirection.SERVER_TO_CLIENT]) seen.add(hex(datagramNonce(dir, c)));
    expect(seen.size).toBe(10_000);
    // identical frames sealed with consecutive counters give unrelated ciphertexts
    const a = sealDatagram(key, DatagramDirection.CLIENT_TO_SERVER, { ...header, counter: 1 }, payload);
    const b = sealDatagram(key, DatagramDirection.CLIENT_TO_SERVER, { ...header, counter: 2 }, payload);
    expect(hex(a.subarray(18))).not.toBe(hex(b.subarray(18)));
  });

  test("header checks name the reason", () => {
    expect(parseDatagramHeader(new Uint8Array(MIN_DATAGRAM_BYTES - 1))).toBe("truncated");
    expect(parseDatagramHeader(new Uint8Array(MAX_DATAGRAM_BYTES + 1))).toBe("oversize");
    const d = sealed();
    d[0] = 0xa2;
    expect(parseDatagramHeader(d)).toBe("bad_version");
    const f = sealed();
    f[1] = 0x80;
    expect(parseDatagramHeader(f)).toBe("bad_flags");
    // keepalive flag on a datagram with a payload, and no keepalive flag on an empty one
    const k = sealed();
    k[1] = 0x02;
    expect(parseDatagramHeader(k)).toBe("bad_flags");
    const e = sealDatagram(key, DatagramDirection.CLIENT_TO_SERVER, { ...header, flags: 0 }, new Uint8Array(0));
    expect(parseDatagramHeader(e)).toBe("bad_flags");
  });
});

describe("ReplayWindow (RFC 4303 style)", () => {
  test("accepts new and reordered counters once, refuses repeats and the too old", () => {
    const w = new ReplayWindow(128);
    const take = (c: number) => {
      const v = w.check(c);
      if (v === "ok") w.update(c);
      return v;
    };
    expect(take(0)).toBe("ok");
    expect(take(0)).toBe("replayed");
    expect(take(10)).toBe("ok");
    expect(take(5)).toBe("ok"); // reordered inside the window
    expect(take(5)).toBe("replayed");
    expect(take(200)).toBe("ok");
    expect(take(73)).toBe("ok"); // 200 - 73 = 127: the window's oldest slot
    expect(take(72)).toBe("too_old");
    expect(take(199)).toBe("ok");
    expect(take(199)).toBe("replayed");
    // a jump beyond the window clears the bitmap: old slots must not alias as "seen"
    expect(take(1000)).toBe("ok");
    expect(take(1000 - 128 + 1)).toBe("ok");
    expect(take(1000 - 128)).toBe("too_old");
  });

  test("check does not move the window (a forged datagram must not)", () => {
    const w = new ReplayWindow(64);
    w.update(100);
    expect(w.check(10_000)).toBe("ok");
    expect(w.check(50)).toBe("ok");
    w.update(50);
    expect(w.check(50)).toBe("replayed");
  });
});

describe("UdpSendPolicy", () => {
  test("no report ever (UDP blocked from the start): both ways for dualSendMs, then the stream, probing", () => {
    const p = new UdpSendPolicy(DATAGRAM_TIMING);
    // no report yet: both ways for dualSendMs, then the stream, probing every 10th
    expect(p.route(0)).toEqual({ datagram: true, stream: true });
    expect(p.route(DATAGRAM_TIMING.dualSendMs)).toEqual({ datagram: true, stream: true });
    let probes = 0;
    for (let i = 1; i <= 20; i++) if (p.route(DATAGRAM_TIMING.dualSendMs + i * 20).datagram) probes++;
    expect(probes).toBe(2);
    p.report(3, 2400);
    expect(p.route(2420)).toEqual({ datagram: true, stream: false });
  });

  test("a session's first frames go both ways until the peer's first report: datagram timing from the start", () => {
    const p = new UdpSendPolicy(DATAGRAM_TIMING);
    for (let t = 0; t < 400; t += 20) expect(p.route(t)).toEqual({ datagram: true, stream: true });
    p.report(15, 400);
    for (let t = 400; t < 1400; t += 20) expect(p.route(t)).toEqual({ datagram: true, stream: false });
  });

  test("datagrams while reports rise; the stream within fallbackMs of silence; dual-send, then probes", () => {
    const p = new UdpSendPolicy(DATAGRAM_TIMING);
    p.route(0);
    p.report(3, 400);
    expect(p.route(420)).toEqual({ datagram: true, stream: false });
    p.report(15, 650);
    expect(p.route(650 + DATAGRAM_TIMING.fallbackMs)).toEqual({ datagram: true, stream: false });
    p.report(15, 900); // no progress
    const lost = 650 + DATAGRAM_TIMING.fallbackMs + 1;
    expect(p.route(lost)).toEqual({ datagram: true, stream: true }); // fell back: both paths for dualSendMs
    expect(p.usingDatagrams).toBe(false);
    expect(p.route(lost + DATAGRAM_TIMING.dualSendMs - 1)).toEqual({ datagram: true, stream: true });
    let later = 0;
    for (let i = 1; i <= 20; i++) if (p.route(lost + DATAGRAM_TIMING.dualSendMs + i * 20).datagram) later++;
    expect(later).toBe(2);
    p.report(16, 5000);
    expect(p.route(5001)).toEqual({ datagram: true, stream: false });
  });

  test("late reports that still show progress keep datagrams; only a flat report (or a long silence) falls back", () => {
    const p = new UdpSendPolicy(DATAGRAM_TIMING);
    p.report(10, 0);
    // no report for 1.5 s (a stalled event loop, a TCP retransmission): still datagrams
    expect(p.route(1500).stream).toBe(false);
    p.report(80, 1600); // late, but progress
    expect(p.route(1700).stream).toBe(false);
    // silence beyond 4 × fallbackMs: the stream
    expect(p.route(1600 + 4 * DATAGRAM_TIMING.fallbackMs + 1).stream).toBe(true);
    p.report(90, 5000);
    expect(p.route(5001).stream).toBe(false);
    p.report(90, 5250); // flat, but within fallbackMs of progress
    expect(p.route(5300).stream).toBe(false);
    p.report(90, 5500);
    expect(p.route(5000 + DATAGRAM_TIMING.fallbackMs + 1).stream).toBe(true);
  });
});

describe("UdpReportSchedule (when a UDP_REPORT is due)", () => {
  const tick = DATAGRAM_TIMING.reportIntervalMs;
  /**
   * One side's reports as its schedule sends them and the peer's send policy (today's 1.1.0 rules) takes them,
   * on a 250 ms tick: `arrivals(t)` is how many datagrams the side has authenticated by time t.
   */
  function run(arrivals: (t: number) => number, untilMs: number) {
    const schedule = new UdpReportSchedule();
    const peer = new UdpSendPolicy(DATAGRAM_TIMING);
    const sent: number[] = [];
    const frames: Array<{ at: number; datagram: boolean }> = [];
    for (let t = 0; t <= untilMs; t += tick) {
      const received = arrivals(t);
      if (schedule.due(received, t)) {
        sent.push(t);
        peer.report(received, t);
      }
      // the peer routes frames until the next tick
      for (let f = t; f < t + tick; f += 10) frames.push({ at: f, datagram: !peer.route(f).stream });
    }
    /** whether every frame routed from `from` (up to `to`) went only by datagram */
    const datagramsOnly = (from: number, to = Number.POSITIVE_INFINITY) =>
      frames.filter((f) => f.at >= from && f.at < to).every((f) => f.datagram);
    return { sent, frames, datagramsOnly };
  }

  test("a rising count: the first report at once, then one per second, and the peer stays on datagrams", () => {
    const { sent, datagramsOnly } = run((t) => (t < 100 ? 0 : Math.floor(t / 20)), 10_000);
    expect(sent[0]).toBe(250);
    // 4 a second before; now 1 (a tick of 250 ms: every 4th tick)
    expect(sent.length).toBeLessThanOrEqual(1 + Math.ceil(10_000 / HEALTHY_REPORT_INTERVAL_MS));
    for (let i = 1; i < sent.length; i++) expect(sent[i]! - sent[i - 1]!).toBe(HEALTHY_REPORT_INTERVAL_MS);
    // from the first report on, every frame goes by datagram: a 1.1.0 peer never falls back on a healthy path
    expect(datagramsOnly(250)).toBe(true);
  });

  test("datagrams that stop: flat reports every tick, the peer falls back within about a second; back at once", () => {
    const breakAt = 5_000;
    const resumeAt = 8_000;
    const count = (t: number) => (t < breakAt ? Math.floor(t / 20) : t < resumeAt ? breakAt / 20 : Math.floor(t / 20) - 100);
    const { sent, frames, datagramsOnly } = run(count, 10_000);
    // every tick reports while the count is flat (the evidence); the first rise after it at once
    const flat = sent.filter((t) => t > breakAt && t < resumeAt);
    expect(flat.length).toBeGreaterThanOrEqual((resumeAt - breakAt) / tick - 2);
    expect(sent).toContain(resumeAt);
    // the peer leaves datagrams within fallbackMs + 2 ticks of the break (today: fallbackMs + 1 tick)
    expect(datagramsOnly(250, breakAt)).toBe(true);
    const leftAt = frames.find((f) => f.at > breakAt && !f.datagram)!.at;
    expect(leftAt - breakAt).toBeLessThanOrEqual(DATAGRAM_TIMING.fallbackMs + 2 * tick);
    // and is back on them from the first report after the resume
    expect(datagramsOnly(resumeAt)).toBe(true);
  });

  test("nothing before the first datagram", () => {
    const s = new UdpReportSchedule();
    expect(s.due(0, 0)).toBe(false);
    expect(s.due(0, 250)).toBe(false);
    expect(s.due(3, 500)).toBe(true);
  });

  test("10 % random loss on both paths (datagrams lost, reports held up by TCP retransmissions): never a fallback", () => {
    let seed = 5;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const schedule = new UdpReportSchedule();
    const peer = new UdpSendPolicy(DATAGRAM_TIMING);
    const inFlight: Array<{ at: number; received: number }> = [];
    let received = 0;
    let lastDeliveryAt = 0;
    let firstReportAt: number | undefined;
    for (let t = 0; t <= 120_000; t += 10) {
      // the peer sends a frame every 20 ms; one in ten datagrams is lost
      if (t % 20 === 0) {
        const route = peer.route(t);
        if (firstReportAt !== undefined) expect(route).toEqual({ datagram: true, stream: false });
        if (route.datagram && rnd() >= 0.1) received++;
      }
      if (t % tick === 0 && schedule.due(received, t)) {
        // a report segment lost once (10 %) waits for a retransmission, twice (1 %) for a backed-off one;
        // TCP delivers in order, so it holds back the reports behind it
        const delay = rnd() < 0.1 ? (rnd() < 0.1 ? 600 : 200) : 5;
        lastDeliveryAt = Math.max(lastDeliveryAt, t + delay);
        inFlight.push({ at: lastDeliveryAt, received });
      }
      while (inFlight.length > 0 && inFlight[0]!.at <= t) {
        peer.report(inFlight.shift()!.received, t);
        firstReportAt ??= t;
      }
    }
    expect(firstReportAt).toBeLessThan(1_000);
    expect(peer.fallbacks).toBe(0);
  });
});

describe("browsers", () => {
  test("IP literals are checked without node:net", () => {
    for (const ok of ["10.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::", "fe80::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"])
      expect(isIpLiteral(ok)).toBe(true);
    for (const bad of ["", "10.0.0.256", "10.0.0", "1.2.3.4.5", "01.2.3.4", "example.org", "1::2::3", "[::1]", "::1/64", "gggg::1"])
      expect(isIpLiteral(bad)).toBe(false);
  });

  test("src/protocol still bundles for a browser without a node:crypto polyfill", async () => {
    const built = await Bun.build({ entrypoints: [join(import.meta.dir, "..", "..", "src", "protocol", "index.ts")], target: "browser" });
    expect(built.success).toBe(true);
    const size = (await built.outputs[0]!.text()).length;
    expect(size).toBeLessThan(150_000);
  });
});
