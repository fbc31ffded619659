/**
 * A raw client of Agora's DHT protocol for hostile-peer tests: PUT_VALUE, GET_VALUE and ADD_PROVIDER
 * messages written by hand (kad-dht's protobuf, docs: libp2p kad-dht spec) to ONE chosen server over one
 * stream, the way an outside client would, without kad-dht's query logic choosing the peers. A refused PUT
 * makes the server reset the stream; the next call opens a new one.
 */
import type { Libp2p, PeerId, Stream } from "@libp2p/interface";
import { Record as DhtRecord } from "@libp2p/kad-dht";
import { type LengthPrefixedStream, lpStream } from "@libp2p/utils";
import type { Multiaddr } from "@multiformats/multiaddr";
import { PROTOCOL_DHT } from "../../src/p2p";

const PUT_VALUE = 0;
const GET_VALUE = 1;
const ADD_PROVIDER = 2;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

function field(no: number, bytes: Uint8Array): number[] {
  return [...varint((no << 3) | 2), ...varint(bytes.byteLength), ...bytes];
}

function message(type: number, key: Uint8Array, record?: Uint8Array, providers?: Uint8Array[]): Uint8Array {
  const parts = [0x08, type, ...field(2, key)];
  if (record) parts.push(...field(3, record));
  for (const p of providers ?? []) parts.push(...field(9, p));
  return Uint8Array.from(parts);
}

/** Field 3 (the record) of a DHT message, if present. */
function recordField(buf: Uint8Array): Uint8Array | null {
  let i = 0;
  const readVarint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = buf[i++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 0x80;
    }
  };
  while (i < buf.length) {
    const tag = readVarint();
    const wire = tag & 7;
    if (wire === 0) readVarint();
    else if (wire === 2) {
      const len = readVarint();
      if (tag >> 3 === 3) return buf.subarray(i, i + len);
      i += len;
    } else if (wire === 5) i += 4;
    else if (wire === 1) i += 8;
    else return null;
  }
  return null;
}

export class RawDhtSession {
  private lp?: LengthPrefixedStream<Stream>;
  constructor(
    private readonly libp2p: Libp2p,
    private readonly peer: PeerId | Multiaddr,
  ) {}

  private async stream(): Promise<LengthPrefixedStream<Stream>> {
    this.lp ??= lpStream(await this.libp2p.dialProtocol(this.peer, PROTOCOL_DHT, { signal: AbortSignal.timeout(10_000) }), {
      maxDataLength: 1 << 20,
    });
    return this.lp;
  }

  /**
   * One request on the session's stream. A stream the server already closed (idle timeout) is replaced once
   * when the write fails; `retryRead` also replaces it once when no answer comes (idempotent requests only:
   * for a PUT, no answer means "refused").
   */
  private async request(msg: Uint8Array, expectAnswer = true, retryRead = false): Promise<Uint8Array | null> {
    for (let attempt = 0; ; attempt++) {
      const lp = await this.stream();
      let written = false;
      try {
        await lp.write(msg, { signal: AbortSignal.timeout(10_000) });
        written = true;
        if (!expectAnswer) return null;
        return (await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray();
      } catch (err) {
        this.lp = undefined;
        if (attempt > 0 || (written && !retryRead)) throw err;
      }
    }
  }

  /** Sends one PUT_VALUE; true when the server stored it (it echoes the message), false when it refused. */
  async put(key: string, value: Uint8Array): Promise<boolean> {
    const k = new TextEncoder().encode(key);
    try {
      await this.request(message(PUT_VALUE, k, new DhtRecord(k, value, new Date()).serialize()));
      return true;
    } catch {
      return false;
    }
  }

  /** The value this server stores under `key` (GET_VALUE answered from its own datastore), or null. */
  async get(key: string): Promise<Uint8Array | null> {
    const answer = await this.request(message(GET_VALUE, new TextEncoder().encode(key)), true, true);
    const rec = answer ? recordField(answer) : null;
    return rec ? DhtRecord.deserialize(rec).value : null;
  }

  /** ADD_PROVIDER for `cidBytes` (a CID's bytes) announcing `self` (multihash bytes) at `addrs`. */
  async addProvider(cidBytes: Uint8Array, self: Uint8Array, addrs: Uint8Array[]): Promise<void> {
    const info = Uint8Array.from([...field(1, self), ...addrs.flatMap((a) => field(2, a))]);
    await this.request(message(ADD_PROVIDER, cidBytes, undefined, [info]), false);
  }

  close(): void {
    this.lp?.unwrap().abort(new Error("session over"));
    this.lp = undefined;
  }
}

/**
 * Sends every (key, value) as a PUT_VALUE to one server over `streams` parallel streams of the same
 * connection; answers how many the server stored.
 */
export async function floodPuts(
  libp2p: Libp2p,
  server: PeerId | Multiaddr,
  items: AsyncIterable<[string, Uint8Array]> | Iterable<[string, Uint8Array]>,
  streams = 4,
): Promise<number> {
  const it = (
    Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : (items as Iterable<[string, Uint8Array]>)[Symbol.iterator]()
  ) as AsyncIterator<[string, Uint8Array]> | Iterator<[string, Uint8Array]>;
  let stored = 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const session = new RawDhtSession(libp2p, server);
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        if (await session.put(next.value[0], next.value[1])) stored++;
      }
      session.close();
    }),
  );
  return stored;
}

export interface FakeNodesOptions {
  /** The DHT server the fakes announce themselves to. */
  server: Multiaddr;
  region: string;
  count: number;
  /** The address every fake advertises (provider record and listen_addr): a black hole, typically. */
  listenAddr: string;
  /**
   * Loopback source addresses: fake i dials from its own address in 127.0.0.0/8 (127.0.0.10, 127.0.0.11 …).
   * libp2p limits inbound connections per source IP (5/s by default); an attacker with as many addresses is
   * not limited by that.
   */
  /** Fakes planted at once. */
  parallel?: number;
}

/**
 * Plants `count` fake nodes in a region: for each, a fresh key connects to `server` (from its own loopback
 * IP), provides the region's enumeration CID with `listenAddr`, stores its validly signed advertisement
 * (zero load, so it would win every ranking) pointing at `listenAddr`, and disconnects. Answers their ids.
 */
export async function plantFakeNodes(o: FakeNodesOptions): Promise<string[]> {
  const { createLibp2p } = await import("libp2p");
  const { generateKeyPair } = await import("@libp2p/crypto/keys");
  const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
  const { multiaddr } = await import("@multiformats/multiaddr");
  const { agoraTcp, agoraTransportStack, advertisementKey, encodeAdvertisement, signAdvertisement } = await import("../../src/p2p");
  const { capabilityNamespace, namespaceCid, regionNamespace } = await import("../../src/p2p/namespaces");
  const { hostileAdvertisement } = await import("./helpers");
  const cids = [(await namespaceCid(regionNamespace(o.region))).bytes, (await namespaceCid(capabilityNamespace("mixer"))).bytes];
  const ids: string[] = [];
  const plantOne = async (i: number) => {
    const key = await generateKeyPair("Ed25519");
    const peer = peerIdFromPrivateKey(key);
    const stack = agoraTransportStack();
    const localAddress = `127.0.${Math.floor(i / 240)}.${10 + (i % 240)}`;
    const lib = await createLibp2p({
      privateKey: key,
      addresses: { listen: [] },
      ...stack,
      transports: [agoraTcp({ dialOpts: { localAddress } as Record<string, unknown> })],
    });
    try {
      const session = new RawDhtSession(lib, o.server);
      for (const cid of cids) await session.addProvider(cid, peer.toMultihash().bytes, [multiaddr(o.listenAddr).bytes]);
      const rec = await signAdvertisement(
        hostileAdvertisement(peer.toString(), { region: o.region, listen_addr: [o.listenAddr], ttl_seconds: 600, seq: 1 }),
        key,
      );
      // The PUT's answer also proves the ADD_PROVIDERs before it on the stream were handled.
      if (!(await session.put(advertisementKey(o.region, peer.toString()), encodeAdvertisement(rec))))
        throw new Error(`fake ${i}: record refused`);
      session.close();
      ids.push(peer.toString());
    } finally {
      await lib.stop();
    }
  };
  const parallel = o.parallel ?? 8;
  for (let i = 0; i < o.count; i += parallel)
    await Promise.all(Array.from({ length: Math.min(parallel, o.count - i) }, (_, j) => plantOne(i + j)));
  return ids;
}
