/** The bootstrap redialer against a libp2p stand-in whose dials all fail: it must keep retrying. */
import { expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { silentLogger } from "../../src/log";
import { Redialer } from "../../src/p2p/bootstrap";
import { waitFor } from "./helpers";

test("a failed redial of a bootstrap peer schedules the next one (backoff), again and again", async () => {
  const self = peerIdFromPrivateKey(await generateKeyPair("Ed25519"));
  const boot = peerIdFromPrivateKey(await generateKeyPair("Ed25519"));
  let dials = 0;
  const libp2p = {
    peerId: self,
    getConnections: () => [],
    peerStore: { merge: async () => undefined },
    dial: async () => {
      dials++;
      throw new Error("connection refused");
    },
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
  } as unknown as Libp2p;
  const r = new Redialer({
    libp2p,
    logger: silentLogger(),
    bootstrap: [`/ip4/127.0.0.1/tcp/1/p2p/${boot}`],
    known: [],
    backoff: { baseMs: 5, capMs: 20 },
  });
  r.start();
  try {
    // before the fix the first failure left the target marked as dialing, so no retry was ever scheduled
    await waitFor("three dials", () => dials >= 3, 10_000, 5);
  } finally {
    r.stop();
  }
  expect(dials).toBeGreaterThanOrEqual(3);
}, 15_000);
