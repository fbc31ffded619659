/**
 * Access control for owned rooms (docs/access.md): room ids bound to an owner key, grants signed by the
 * owner or a delegated moderator and verified offline, revocations, signed moderation requests. Used by the
 * room server (src/rooms), the SDK (src/client) and the CLI; it depends on src/protocol only.
 */
export {
  decodeGrant,
  encodeGrant,
  encodeLinkBody,
  GRANT_SIGNATURE_DOMAIN,
  GRANT_VERSION,
  type Grant,
  GrantError,
  type GrantFailure,
  type GrantLink,
  grantFromString,
  grantToString,
  type IssueGrantOptions,
  issueGrant,
  linkId,
  linkSigningMessage,
  MAX_GRANT_LINKS,
  ROLE_NAMES,
  Role,
  type RoleName,
  roleFromName,
  type VerifiedGrant,
  type VerifyGrantOptions,
  verifyGrant,
} from "./grant";
export { applyCarried, type CarriedAccess, type CarriedParticipant } from "./handover";
export { ED25519_PUBLIC_KEY_BYTES, type GrantSigner, sha256, signerFromRawPrivateKey, toHex, verifyEd25519 } from "./keys";
export {
  MODERATE_SIGNATURE_DOMAIN,
  type ModerationContext,
  moderateSigningMessage,
  signModerate,
  verifyModerate,
} from "./moderation";
export {
  isRoomOwner,
  MAX_OWNED_ROOM_NAME_LENGTH,
  OWNER_KEY_ID_CHARS,
  ownedRoomId,
  ownerKeyId,
  type RoomOwnership,
  roomOwnership,
} from "./owned-room";
export {
  checkRevocation,
  MAX_REVOCATION_ID_CHARS,
  MAX_REVOCATION_ROOMS,
  MAX_REVOCATIONS_PER_ROOM,
  MemoryRevocationStore,
  type Revocation,
  type RevocationCheck,
  type RevocationStore,
} from "./revocations";
