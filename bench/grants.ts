/**
 * bench/grants: the cost of access control on a mixer's JOIN path — offline verification of grants with
 * 1, 2 and 4 links (each link one Ed25519 verification) — and of one signed MODERATE check. Bounded: each
 * row runs for `--ms` milliseconds (default 500). Prints a table, then one JSON line.
 *   bun bench/grants.ts [--ms 500]
 * Goal: grant checks never limit the join rate: at the default per-IP cap of 32 joins/s, even 4-link
 * grants cost under 5 % of one core (each verification runs synchronously inside the JOIN handler).
 */
import {
  issueGrant,
  MemoryRevocationStore,
  ownedRoomId,
  Role,
  signerFromRawPrivateKey,
  signModerate,
  verifyGrant,
  verifyModerate,
} from "../src/access";
import { ModerateAction } from "../src/protocol";
import { positiveArg } from "./args";

const MS = positiveArg("ms", 500);
const seed = (b: number) => Uint8Array.from({ length: 32 }, (_, i) => (b + i) & 0xff);
const keys = [0, 0x20, 0x40, 0x60, 0x80].map((b) => signerFromRawPrivateKey(seed(b)));
const owner = keys[0]!;
const room = ownedRoomId("bench", owner.publicKey);
const expiresAt = Date.now() + 3_600_000;
const revocations = new MemoryRevocationStore();
for (let i = 0; i < 64; i++) revocations.revoke(room, { id: i.toString(16).padStart(32, "0"), until: expiresAt }, Date.now());

function chain(links: number): { grant: Uint8Array; holder: Uint8Array } {
  let grant: Uint8Array | undefined;
  for (let i = 0; i < links; i++) {
    const last = i === links - 1;
    grant = issueGrant(keys[i]!, {
      room,
      role: last ? Role.SPEAKER : Role.MODERATOR,
      expiresAt,
      subject: keys[i + 1]!.publicKey,
      ...(grant ? { parent: grant } : {}),
    });
  }
  return { grant: grant!, holder: keys[links]!.publicKey };
}

function rate(fn: () => void): { perSecond: number; usPerOp: number } {
  for (let i = 0; i < 50; i++) fn();
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < MS) {
    for (let i = 0; i < 20; i++) fn();
    n += 20;
    t = performance.now();
  }
  const s = (t - t0) / 1000;
  return { perSecond: Math.round(n / s), usPerOp: Number(((s * 1e6) / n).toFixed(1)) };
}

const rows: { what: string; perSecond: number; usPerOp: number }[] = [];
for (const links of [1, 2, 4]) {
  const { grant, holder } = chain(links);
  const now = Date.now();
  rows.push({
    what: `verify grant, ${links} link${links > 1 ? "s" : ""} (64 revocations)`,
    ...rate(() => verifyGrant(grant, { room, now, remoteKey: holder, revoked: (id, at) => revocations.isRevoked(room, id, at) })),
  });
}
const ctx = { room, participantId: "p0123456789ab" };
const req = signModerate(keys[1]!, ctx, { requestId: 1, action: ModerateAction.MUTE, target: "pa1b2c3d4e5f6", until: 0 });
rows.push({ what: "verify MODERATE signature", ...rate(() => verifyModerate(keys[1]!.publicKey, ctx, req)) });

console.log("what                                     ops/s    µs/op");
for (const r of rows) console.log(`${r.what.padEnd(40)} ${String(r.perSecond).padStart(7)}  ${String(r.usPerOp).padStart(7)}`);
console.log(JSON.stringify({ bench: "grants", ms: MS, rows }));
