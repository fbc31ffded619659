/**
 * The constants every side of Agora agrees on: the media format fixed by audio protocol version 1, and the
 * token patterns for ids and names that the wire, the DHT records, the config and the CLI all check. Each
 * is defined here once; everything else imports it.
 */

/** Codec parameters fixed by version 1: Opus, 48 kHz, mono, 20 ms frames. */
export const SAMPLE_RATE = 48_000;
export const CHANNELS = 1;
export const FRAME_SAMPLES = 960;
export const FRAME_MS = 20;
/** RFC 6716 §3.2.1: the largest Opus packet for one 20 ms frame. */
export const MAX_OPUS_PAYLOAD = 1275;

export const MAX_ROOM_ID_LENGTH = 64;
/** Room ids: 1–64 characters of [A-Za-z0-9._-], starting with a letter or digit. */
export const ROOM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Participant ids the server assigns in JOINED: the same alphabet as room ids. */
export const PARTICIPANT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Region and group names (config, advertisements, discovery): lowercase tokens of up to 63 characters. */
export const REGION_TOKEN_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Node labels (`key=value` or plain words) as carried in advertisements. */
export const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,127}$/;
/**
 * A libp2p peer id as Agora uses them: an Ed25519 key as an identity multihash in base58btc (`12D3KooW…`,
 * 52 characters). Parsing (peerIdFromString) is the real check; this pattern is for cheap pre-filtering and
 * messages.
 */
export const PEER_ID_PATTERN = /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/;
