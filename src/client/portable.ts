/**
 * The runtime-neutral part of the participant SDK that a browser bundle may import without a platform (no
 * libp2p node of its own, no codec): one protocol session and the roster view. The dashboard's test-call page
 * (src/http/call) uses it with its own WebSocket node and WebCodecs Opus. (scripts/check-layers.ts accepts a
 * subsystem's portable.ts as a face.)
 */

export { type Participant, type RosterChange, RosterView } from "./roster";
export { AudioRedirectError, AudioRemoteError, AudioSession, type AudioSessionOptions } from "./session";
