/** The live node's /metrics: the seed's names and labels, node info, process metrics, promtool-clean. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type NodeHandle, startNode } from "../helpers/node-process";

let h: NodeHandle;
beforeAll(async () => {
  h = await startNode();
});
afterAll(() => h?.cleanup());

test("exports the seed's metrics with their names and labels", async () => {
  const r = await fetch(h.metricsUrl);
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toContain("text/plain");
  const text = await r.text();
  expect(text).toContain("# TYPE agora_connections_total counter");
  expect(text).toContain("# TYPE agora_connections_active gauge");
  expect(text).toContain("# TYPE agora_rooms_active gauge");
  expect(text).toContain("# TYPE agora_audio_packets_total counter");
  expect(text).toMatch(/agora_audio_packets_total\{direction="in"\} \d+/);
  expect(text).toMatch(/agora_audio_packets_total\{direction="out"\} \d+/);
  expect(text).toMatch(/agora_node_uptime_seconds \d/);
  expect(text).toContain(`agora_node_info{version="0.1.0",mode="dedicated",region="default",peer_id="${await h.peerId()}"} 1`);
  expect(text).toContain("process_resident_memory_bytes");
});

test("passes promtool check metrics with no lint problem", async () => {
  const text = await (await fetch(h.metricsUrl)).text();
  const p = Bun.spawn(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  expect(`${out}${err}`.trim()).toBe("");
  expect(code).toBe(0);
});

test("other paths on the metrics port are 404 JSON", async () => {
  const r = await fetch(h.metricsUrl.replace("/metrics", "/nope"));
  expect(r.status).toBe(404);
  expect(((await r.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
});
