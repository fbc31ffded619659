/**
 * bench/websockets: libp2p over WebSocket (/ws) against TCP on loopback, both in Bun with the node's stack
 * (noise, yamux as tuned in src/transport). Connect time = dial to an upgraded connection (TCP/WS handshake,
 * noise, yamux), median of --connects fresh dials; throughput = --mib MiB through one stream, sha256
 * checked by the listener (test/relay/bulk.ts), median of --runs. Prints a table, then one JSON line.
 *   bun bench/websockets.ts [--connects 20] [--runs 3] [--mib 32]
 */
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import { agoraTransportStack, agoraWebSockets } from "../src/transport";
import { sendBulk, serveBulk } from "../test/relay/bulk";
import { positiveArg } from "./args";

const CONNECTS = positiveArg("connects", 20);
const RUNS = positiveArg("runs", 3);
const MIB = positiveArg("mib", 32);

const stack = agoraTransportStack();
const mk = (listen: string[]) =>
  createLibp2p({
    addresses: { listen },
    ...stack,
    transports: [agoraWebSockets(), ...stack.transports],
    connectionManager: { inboundConnectionThreshold: 10_000 },
    services: { ping: ping() },
  });
const server = await mk(["/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/tcp/0"]);
await serveBulk(server, (MIB + 1) * 1024 * 1024);
const client = await mk([]);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const data = new Uint8Array(MIB * 1024 * 1024);
for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;

const rows: { transport: string; connectMs: number; mibPerS: number }[] = [];
for (const addr of server.getMultiaddrs()) {
  const name = addr.toString().includes("/ws") ? "ws" : "tcp";
  const connects: number[] = [];
  for (let i = 0; i < CONNECTS; i++) {
    const t0 = performance.now();
    const conn = await client.dial(addr, { force: true, signal: AbortSignal.timeout(10_000) });
    connects.push(performance.now() - t0);
    await conn.close();
  }
  const rates: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const conn = await client.dial(addr, { force: true, signal: AbortSignal.timeout(10_000) });
    const t0 = performance.now();
    await sendBulk(conn, data, 120_000);
    rates.push(MIB / ((performance.now() - t0) / 1000));
    await conn.close();
  }
  rows.push({ transport: name, connectMs: median(connects), mibPerS: median(rates) });
}
await client.stop();
await server.stop();

console.log(`libp2p over ws vs tcp, loopback, Bun ${Bun.version} (${CONNECTS} connects, ${RUNS} × ${MIB} MiB, medians)`);
console.log("transport   connect ms   throughput MiB/s");
for (const r of rows) console.log(`${r.transport.padEnd(9)} ${r.connectMs.toFixed(1).padStart(12)}   ${r.mibPerS.toFixed(1).padStart(16)}`);
console.log(
  JSON.stringify({
    bench: "websockets",
    bun: Bun.version,
    connects: CONNECTS,
    runs: RUNS,
    mib: MIB,
    results: Object.fromEntries(
      rows.map((r) => [r.transport, { connect_ms_median: +r.connectMs.toFixed(1), mib_per_s_median: +r.mibPerS.toFixed(1) }]),
    ),
  }),
);
process.exit(0);
