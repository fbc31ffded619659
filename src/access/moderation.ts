/**
 * Signed moderation requests (MODERATE, 0x30): a moderator signs each request with the key its moderator
 * grant is bound to, over the room, its own participant id on this session and the request, so a request
 * cannot be replayed into another room or another session, nor forged by anyone holding only the stream.
 *
 *   signed = "agora-moderate/1" ‖ 0x00 ‖ roomLen:u8 room ‖ pidLen:u8 moderatorPid ‖ requestId:u32
 *            ‖ action:u8 ‖ targetLen:u8 target ‖ until:u64
 */
import type { ModerateMessage } from "../protocol";
import { type GrantSigner, verifyEd25519 } from "./keys";

export const MODERATE_SIGNATURE_DOMAIN = "agora-moderate/1";
const enc = new TextEncoder();

export interface ModerationContext {
  room: string;
  /** the moderator's participant id on this session (JOINED) */
  participantId: string;
}

export function moderateSigningMessage(
  ctx: ModerationContext,
  m: Pick<ModerateMessage, "requestId" | "action" | "target" | "until">,
): Uint8Array {
  const domain = enc.encode(`${MODERATE_SIGNATURE_DOMAIN}\0`);
  const room = enc.encode(ctx.room);
  const pid = enc.encode(ctx.participantId);
  const target = enc.encode(m.target);
  const out = new Uint8Array(domain.length + 1 + room.length + 1 + pid.length + 4 + 1 + 1 + target.length + 8);
  const view = new DataView(out.buffer);
  let o = 0;
  out.set(domain, o);
  o += domain.length;
  out[o++] = room.length;
  out.set(room, o);
  o += room.length;
  out[o++] = pid.length;
  out.set(pid, o);
  o += pid.length;
  view.setUint32(o, m.requestId);
  o += 4;
  out[o++] = m.action;
  out[o++] = target.length;
  out.set(target, o);
  o += target.length;
  view.setBigUint64(o, BigInt(m.until));
  return out;
}

export function signModerate(
  signer: GrantSigner,
  ctx: ModerationContext,
  m: Pick<ModerateMessage, "requestId" | "action" | "target" | "until">,
): ModerateMessage {
  return { type: "MODERATE", ...m, signature: signer.sign(moderateSigningMessage(ctx, m)) };
}

export function verifyModerate(key: Uint8Array, ctx: ModerationContext, m: ModerateMessage): boolean {
  return verifyEd25519(key, moderateSigningMessage(ctx, m), m.signature);
}
