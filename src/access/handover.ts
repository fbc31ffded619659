/**
 * What of a room's access state must travel with a MOVE (handover to a successor mixer), beyond what the
 * grants and the room record's revocations already say: per participant whether a moderator promoted it
 * (listener → speaker) or muted it, and whether the room is locked. The old host puts this into the move
 * token it signs (the placement subsystem's format); the successor, having verified the token, hands it to
 * the room service, which applies it on top of the participant's re-verified grant and never beyond it: a
 * promotion gives speaker at most, so a MOVE cannot make anyone a moderator or admit a revoked grant.
 */
import { Role, type VerifiedGrant } from "./grant";

export interface CarriedParticipant {
  /** the id of the participant grant's last link (what the successor matches the re-presented grant on) */
  linkId: string;
  /** the participant's libp2p peer id on the old host (to sign its own move token); not used to match */
  peer?: string;
  promoted: boolean;
  muted: boolean;
}

export interface CarriedAccess {
  room: string;
  locked: boolean;
  participants: CarriedParticipant[];
}

/** The role and mute state a re-verified grant gets at the successor, given what the old host carried. */
export function applyCarried(grant: VerifiedGrant, carried: CarriedParticipant | undefined): { role: number; muted: boolean } {
  if (!carried || carried.linkId !== grant.linkIds[grant.linkIds.length - 1]) return { role: grant.role, muted: false };
  const role = carried.promoted && grant.role === Role.LISTENER ? Role.SPEAKER : grant.role;
  return { role, muted: carried.muted };
}
