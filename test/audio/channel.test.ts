/**
 * WorkerChannel against a fake worker: id routing, worker errors, timeouts, late replies, reject-all on
 * close, tick/log dispatch, fire-and-forget failures. No real worker and no timing assertion: the only
 * timeouts are tiny ones the test waits out.
 */
import { describe, expect, test } from "bun:test";
import { WorkerChannel, WorkerChannelClosedError, type WorkerPort } from "../../src/audio/channel";
import type { FromWorker, TickReport, ToWorker } from "../../src/audio/worker-protocol";
import { AgoraError } from "../../src/errors";

/** Records what the channel posts; `answer` plays the worker's side. */
class FakeWorker implements WorkerPort {
  readonly posted: ToWorker[] = [];
  readonly handlers = new Set<(e: MessageEvent) => void>();
  throwOnPost?: Error;
  postMessage(message: unknown): void {
    if (this.throwOnPost) throw this.throwOnPost;
    this.posted.push(message as ToWorker);
  }
  addEventListener(_type: "message", listener: (e: MessageEvent) => void): void {
    this.handlers.add(listener);
  }
  removeEventListener(_type: "message", listener: (e: MessageEvent) => void): void {
    this.handlers.delete(listener);
  }
  answer(m: FromWorker): void {
    const e = new MessageEvent("message", { data: m });
    for (const h of this.handlers) h(e);
  }
  get listeners(): number {
    return this.handlers.size;
  }
}

const tick: TickReport = {
  t: "tick",
  tickSeconds: [0.001],
  concealed: 0,
  late: 0,
  delivered: 2,
  outboundDropped: 0,
  unknownDropped: 0,
  skipped: 0,
};

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

describe("WorkerChannel", () => {
  test("each request gets its own id and its own reply, whatever order the replies come in", async () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w);
    const a = ch.request({ t: "stats" });
    const b = ch.request({ t: "join", room: 1, participant: 2 });
    const c = ch.request({ t: "createRoom", room: 3, seqBase: 9 });
    expect(w.posted.map((m) => m.t)).toEqual(["stats", "join", "createRoom"]);
    expect(w.posted[1]).toEqual({ t: "join", room: 1, participant: 2, id: w.posted[1]!.id });
    const ids = w.posted.map((m) => m.id);
    expect(new Set(ids).size).toBe(3);
    expect(ch.pendingCount).toBe(3);
    w.answer({ t: "reply", id: ids[2]!, ok: true, result: "c" });
    w.answer({ t: "reply", id: ids[0]!, ok: true, result: ["a"] });
    w.answer({ t: "reply", id: ids[1]!, ok: false, error: "no such room" });
    expect(await a).toEqual(["a"]);
    expect(await c).toBe("c");
    const err = await rejection(b);
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).code).toBe("MEDIA_ENGINE");
    expect((err as AgoraError).message).toBe("media worker: no such room");
    expect(ch.pendingCount).toBe(0);
  });

  test("a request without a reply times out; its late reply is ignored and does not answer another request", async () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w);
    const err = await rejection(ch.request({ t: "stats" }, 5));
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).message).toBe("media worker did not answer stats within 5 ms");
    expect(ch.pendingCount).toBe(0);
    const lateId = w.posted[0]!.id;
    const next = ch.request({ t: "stats" });
    w.answer({ t: "reply", id: lateId, ok: true, result: "late" }); // ignored
    w.answer({ t: "reply", id: lateId, ok: false, error: "late too" }); // ignored
    expect(ch.pendingCount).toBe(1);
    w.answer({ t: "reply", id: w.posted[1]!.id, ok: true, result: "fresh" });
    expect(await next).toBe("fresh");
  });

  test("close rejects every pending request at once with a typed error, refuses later ones, ignores the worker", async () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w, 60_000);
    const ticks: TickReport[] = [];
    ch.on("tick", (r) => ticks.push(r));
    const pending = [ch.request({ t: "stats" }), ch.request({ t: "leave", room: 1, participant: 1 }), ch.request({ t: "stop" })];
    expect(w.listeners).toBe(1);
    ch.close("media worker died: test");
    ch.close("a second close changes nothing");
    expect(ch.closed).toBe(true);
    expect(ch.pendingCount).toBe(0);
    expect(w.listeners).toBe(0);
    for (const p of pending) {
      const err = await rejection(p);
      expect(err).toBeInstanceOf(WorkerChannelClosedError);
      expect((err as AgoraError).code).toBe("MEDIA_ENGINE");
      expect((err as AgoraError).message).toBe("media worker died: test");
    }
    const after = await rejection(ch.request({ t: "stats" }));
    expect(after).toBeInstanceOf(WorkerChannelClosedError);
    expect(w.posted).toHaveLength(3); // nothing posted after close
    // Whatever the dead worker still sends reaches nobody.
    w.answer({ t: "reply", id: w.posted[0]!.id, ok: true, result: "too late" });
    w.answer(tick);
    expect(ticks).toHaveLength(0);
  });

  test("ticks and logs go to their listeners", () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w);
    const ticks: TickReport[] = [];
    const logs: string[] = [];
    ch.on("tick", (r) => ticks.push(r));
    ch.on("log", (m) => logs.push(`${m.level}:${m.msg}:${JSON.stringify(m.fields)}`));
    w.answer(tick);
    w.answer({ t: "log", level: "warn", msg: "hello", fields: { a: 1 } });
    w.answer(tick);
    expect(ticks).toEqual([tick, tick]);
    expect(logs).toEqual(['warn:hello:{"a":1}']);
  });

  test("notify: a refused or unanswered notification is reported, unless the channel closed meanwhile", async () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w, 5);
    const failed: string[] = [];
    ch.on("notifyFailed", (err, request) => failed.push(`${request}: ${err.message}`));
    ch.notify({ t: "join", room: 1, participant: 1 });
    ch.notify({ t: "leave", room: 1, participant: 1 });
    w.answer({ t: "reply", id: w.posted[0]!.id, ok: false, error: "unknown room" });
    const deadline = Date.now() + 5000;
    while (failed.length < 2 && Date.now() < deadline) await Bun.sleep(5);
    expect(failed).toEqual(["join: media worker: unknown room", "leave: media worker did not answer leave within 5 ms"]);
    const quiet = new WorkerChannel(new FakeWorker(), 60_000);
    let reported = 0;
    quiet.on("notifyFailed", () => reported++);
    quiet.notify({ t: "stats" });
    quiet.close("stopped");
    quiet.notify({ t: "stats" }); // closed: dropped silently
    await Bun.sleep(0);
    expect(reported).toBe(0);
  });

  test("a message the worker port refuses rejects its request instead of leaving it pending", async () => {
    const w = new FakeWorker();
    const ch = new WorkerChannel(w, 60_000);
    w.throwOnPost = new Error("DataCloneError: cannot clone");
    const err = await rejection(ch.request({ t: "stats" }));
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).message).toContain("cannot send stats to the media worker: DataCloneError");
    expect(ch.pendingCount).toBe(0);
  });
});
