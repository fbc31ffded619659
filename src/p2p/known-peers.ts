/**
 * `<data_dir>/known-peers.json`: Agora DHT peers this node has been connected to, so a restarted node can
 * rejoin the network even when its bootstrap peers are gone or none are configured (Kubo keeps its peer
 * store for the same reason). It is a cache: a missing or corrupt file is logged and ignored, never fatal,
 * and it is always written atomically (temp file, fsync, rename) so a crash cannot leave a torn file.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { multiaddr } from "@multiformats/multiaddr";
import type { Logger } from "../log";
import { writeFileAtomic } from "../state";

export const KNOWN_PEERS_FILE = "known-peers.json";
/** Most recently seen peers kept; older ones fall off. */
export const MAX_KNOWN_PEERS = 256;
/** Addresses kept per peer. */
const MAX_ADDRS_PER_PEER = 8;
/** Peers not seen for this long are dropped on save (30 days). */
const MAX_AGE_SECONDS = 30 * 86400;

export interface KnownPeer {
  peer_id: string;
  /** Dialable multiaddrs without /p2p/<peer_id>. */
  addrs: string[];
  /** Unix seconds of the last time this node was connected to the peer. */
  last_seen: number;
}

interface KnownPeersFile {
  version: 1;
  peers: KnownPeer[];
}

export function knownPeersPath(dataDir: string): string {
  return join(dataDir, KNOWN_PEERS_FILE);
}

function validAddr(a: unknown): a is string {
  if (typeof a !== "string" || a.length > 512 || !a.startsWith("/")) return false;
  try {
    multiaddr(a);
    return true;
  } catch {
    return false;
  }
}

/** Reads the file; returns [] (and logs why) when it is missing, unreadable or malformed. */
export function loadKnownPeers(file: string, logger: Logger): KnownPeer[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      logger.warn({ file, err: String(err) }, "cannot read known peers; starting without them");
    return [];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    logger.warn({ file }, "known peers file is not valid JSON; ignoring it (it will be rewritten)");
    return [];
  }
  const peers = (parsed as Partial<KnownPeersFile> | null)?.peers;
  if (!Array.isArray(peers)) {
    logger.warn({ file }, "known peers file has no peers list; ignoring it");
    return [];
  }
  const out: KnownPeer[] = [];
  for (const p of peers) {
    if (p === null || typeof p !== "object") continue;
    const { peer_id, addrs, last_seen } = p as Partial<KnownPeer>;
    if (typeof peer_id !== "string" || !/^[1-9A-HJ-NP-Za-km-z]{40,60}$/.test(peer_id)) continue;
    if (!Array.isArray(addrs) || typeof last_seen !== "number" || !Number.isFinite(last_seen)) continue;
    const good = addrs.filter(validAddr).slice(0, MAX_ADDRS_PER_PEER);
    if (good.length > 0) out.push({ peer_id, addrs: good, last_seen });
  }
  return out.sort((a, b) => b.last_seen - a.last_seen).slice(0, MAX_KNOWN_PEERS);
}

/** Merges `seen` into `previous` (newest wins), trims, and writes atomically. Returns what was written. */
export function saveKnownPeers(file: string, previous: KnownPeer[], seen: KnownPeer[], nowSeconds = Date.now() / 1000): KnownPeer[] {
  const byId = new Map<string, KnownPeer>();
  for (const p of [...previous, ...seen]) {
    const old = byId.get(p.peer_id);
    if (!old || p.last_seen >= old.last_seen) byId.set(p.peer_id, { ...p, addrs: p.addrs.filter(validAddr).slice(0, MAX_ADDRS_PER_PEER) });
  }
  const peers = [...byId.values()]
    .filter((p) => p.addrs.length > 0 && nowSeconds - p.last_seen <= MAX_AGE_SECONDS)
    .sort((a, b) => b.last_seen - a.last_seen)
    .slice(0, MAX_KNOWN_PEERS);
  const body: KnownPeersFile = { version: 1, peers };
  writeFileAtomic(file, `${JSON.stringify(body, null, 1)}\n`, 0o600);
  return peers;
}
