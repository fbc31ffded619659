/**
 * Wire format of the libp2p audio protocol `/agora/audio/1.0.0` (documented in ./protocol.md).
 *
 * Every message travels as `u16 length (big-endian) | body`, the body starting with a one-byte message
 * type so the protocol can grow without a new framing. A 16-bit length (not libp2p's usual varint) keeps
 * the header at 2 bytes for ~100-byte Opus frames and makes the size bound obvious: a peer can never make
 * us buffer more than MAX_MESSAGE_LENGTH bytes for one message, and an oversized length is rejected
 * before any of its body is read.
 *
 * Decoding never throws: every path returns either a message or a WireError (an AgoraError with code
 * "WIRE_PROTOCOL") that names the offending field and carries a machine-readable `reason`, which the room
 * service maps onto the error code it sends back and onto the `reason` label of its error counter.
 */
import { AgoraError } from "../errors";
import type { AudioFrame } from "./types";

export const AUDIO_PROTOCOL = "/agora/audio/1.0.0";
/**
 * Version 1.1.0: the same framing and messages plus extensions (tag-length-value fields after JOIN's and
 * JOINED's fixed fields) and new message types (REDIRECT, MOVE, and those of the capabilities below). A node
 * registers both ids; a client offers 1.1.0 first and falls back to 1.0.0 through multistream-select.
 */
export const AUDIO_PROTOCOL_1_1 = "/agora/audio/1.1.0";
/** Protocol ids a client offers, most preferred first. */
export const AUDIO_PROTOCOLS: readonly string[] = [AUDIO_PROTOCOL_1_1, AUDIO_PROTOCOL];
/** Version carried in JOIN/JOINED on `/agora/audio/1.0.0`. */
export const WIRE_VERSION = 1;
/** Version carried in JOIN/JOINED on `/agora/audio/1.1.0` (the layout with extensions). */
export const WIRE_VERSION_1_1 = 2;
export const SUPPORTED_WIRE_VERSIONS: readonly number[] = [WIRE_VERSION, WIRE_VERSION_1_1];

/** The JOIN/JOINED version that belongs to a negotiated protocol id (undefined: not an audio protocol). */
export function wireVersionForProtocol(protocol: string): number | undefined {
  if (protocol === AUDIO_PROTOCOL) return WIRE_VERSION;
  if (protocol === AUDIO_PROTOCOL_1_1) return WIRE_VERSION_1_1;
  return undefined;
}

/**
 * Capability bits exchanged in the `capabilities` extension of JOIN (what the client handles) and JOINED
 * (what the server offers on this session). A side only uses a feature both announced.
 */
export const Capability = {
  /** REDIRECT and MOVE: the client follows them (room directory, handover). */
  ROOM_DIRECTORY: 1 << 0,
  /** Voice as encrypted UDP datagrams beside the stream. */
  UDP_DATAGRAMS: 1 << 1,
  /** AUDIO frames carry a voice-activity flag. */
  VOICE_ACTIVITY: 1 << 2,
  /** Owned rooms: grants, roles, moderation requests. */
  ACCESS_CONTROL: 1 << 3,
  /** Per-listener mix settings (mute for me, per-source volume, priority speaker). */
  PERSONAL_MIX: 1 << 4,
  /** ROSTER: the room's participants with speaking flags, on join and on change. */
  ROSTER: 1 << 5,
} as const;

import {
  CHANNELS,
  FRAME_SAMPLES,
  MAX_OPUS_PAYLOAD,
  MAX_ROOM_ID_LENGTH,
  PARTICIPANT_ID_PATTERN,
  PEER_ID_PATTERN,
  ROOM_ID_PATTERN,
  SAMPLE_RATE,
} from "./constants";

export const MAX_NAME_BYTES = 64;
export const MAX_PARTICIPANT_ID_LENGTH = 64;
export const MAX_ERROR_MESSAGE_BYTES = 512;
/**
 * Largest body of any message. Version 1 messages never exceed 1536 bytes (ERROR with the longest message:
 * 1 + 2 + 2 + 512); 1.1.0 extensions (grants with their delegation chain) may use up to 4096.
 */
export const MAX_MESSAGE_LENGTH = 4096;
/** Largest body a server sends on a 1.0.0 session (1.0.0 clients reject longer messages). */
export const MAX_MESSAGE_LENGTH_V1 = 1536;
/** Largest value of one JOIN/JOINED extension. */
export const MAX_EXTENSION_BYTES = 3072;
/** Largest move token in a MOVE (and the JOIN extension that presents it). */
// 512, not 256: a move token names the room (up to 64 characters), three peer ids (52 each) and carries a
// signature (64) and, for owned rooms, the access state (17): about 320 bytes at most.
export const MAX_MOVE_TOKEN_BYTES = 512;
/** Addresses carried in REDIRECT and MOVE, and the length of each (multiaddr text form). */
export const MAX_REDIRECT_ADDRS = 16;
export const MAX_ADDR_BYTES = 256;
export const LENGTH_PREFIX_BYTES = 2;

export const MessageType = {
  JOIN: 0x01,
  JOINED: 0x02,
  ERROR: 0x03,
  LEAVE: 0x04,
  PING: 0x05,
  PONG: 0x06,
  /** 1.1.0: the room is hosted by another mixer; join it there. */
  REDIRECT: 0x07,
  /** 1.1.0: the room moves to a successor mixer; join it there with the token. */
  MOVE: 0x08,
  /** 1.1.0 with Capability.ROSTER: who is in the room and who speaks. */
  ROSTER: 0x09,
  AUDIO: 0x10,
  /**
   * 1.1.0, both directions, Capability.UDP_DATAGRAMS: how many of the peer's datagrams this side has
   * authenticated so far; the peer sends voice by datagram only while this count keeps rising.
   */
  UDP_REPORT: 0x20,
  /** 1.1.0 with Capability.VOICE_ACTIVITY: AUDIO plus a flags byte (bit 0: the sender detects voice). */
  AUDIO_VAD: 0x11,
  /** 1.1.0 with Capability.PERSONAL_MIX, client → server: per-source gains of this listener's mix. */
  MIX_SETTINGS: 0x31,
  /** 1.1.0 access control: a moderator's signed request (C → S). */
  MODERATE: 0x30,
  /** 1.1.0 access control: the answer to one MODERATE (S → C). */
  MODERATE_RESULT: 0x32,
  /** 1.1.0 access control: a moderation that happened in the room, to every participant (S → C). */
  MODERATION: 0x33,
} as const;

/** AUDIO_VAD flags: bit 0 voice activity; the other bits are reserved and must be 0. */
export const AudioVadFlag = { VOICE: 0x01 } as const;
/** Most entries of one MIX_SETTINGS (the whole set of a listener's rules). */
export const MAX_MIX_ENTRIES = 32;
/** MIX_SETTINGS gains are u16 in thousandths: 0 mutes, 1000 is unchanged, 4000 (+12 dB) the most. */
export const MIX_GAIN_UNIT = 1000;
export const MAX_MIX_GAIN = 4;

/** What a MODERATE asks (the `action` byte of MODERATE and MODERATION). */
export const ModerateAction = {
  /** the target's audio is no longer mixed (server-side mute) */
  MUTE: 1,
  UNMUTE: 2,
  /** the target leaves the room (ERROR FORBIDDEN) and its grant is revoked until `until` (0: until it expires) */
  REMOVE: 3,
  /** REMOVE, and the target's key is banned until `until` (0: until its grant expires) */
  BAN_KEY: 4,
  /** a listener becomes a speaker */
  PROMOTE: 5,
  /** no new joins except moderators */
  LOCK: 6,
  UNLOCK: 7,
  /** everyone leaves; the room stays locked */
  END: 8,
  /** a revocation (target = a grant link id or a key, in hex) until `until`; holders present are removed */
  REVOKE: 9,
} as const;
export type ModerateActionName = keyof typeof ModerateAction;
export const MAX_MODERATE_TARGET_BYTES = 64;
export const MODERATE_SIGNATURE_BYTES = 64;
/*
 * Reserved type ranges for 1.1.0 capabilities (see protocol.md): 0x0a-0x0f and 0x30-0x3f access control and
 * personal mix, 0x11-0x1f audio variants (voice activity), 0x20-0x2f UDP datagram control.
 */

/** Tags of JOIN extensions (1.1.0). Unknown tags are skipped, so adding one needs no new version. */
export const JoinExtension = {
  CAPABILITIES: 0x01,
  MOVE_TOKEN: 0x02,
  GRANT: 0x03,
} as const;

/** Tags of JOINED extensions (1.1.0). */
export const JoinedExtension = {
  CAPABILITIES: 0x01,
  /** the room's epoch on this host (room directory) */
  EPOCH: 0x02,
  /** the participant's role (access control) */
  ROLE: 0x03,
  /** the UDP voice endpoint, session id and key (Capability.UDP_DATAGRAMS) */
  UDP_OFFER: 0x10,
} as const;

/** An IPv4 or IPv6 literal in text form (without node:net, so the codec also bundles for browsers). */
export function isIpLiteral(a: string): boolean {
  if (/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(a)) return true;
  if (!a.includes(":") || /[^0-9A-Fa-f:.]/.test(a)) return false;
  try {
    new URL(`http://[${a}]/`);
    return true;
  } catch {
    return false;
  }
}

/** Most addresses in a UDP offer, and the longest (an IP literal in text form). */
export const MAX_UDP_OFFER_ADDRS = 4;
export const MAX_UDP_OFFER_ADDR_BYTES = 45;

/**
 * Where and how to send voice datagrams (JOINED extension 0x10): the mixer's UDP port, optionally its IP
 * addresses (none: the host the client dialled), the session id every datagram carries and the 32-byte
 * AES-256-GCM key of this session.
 */
export interface UdpOffer {
  sessionId: number;
  port: number;
  key: Uint8Array;
  addrs: string[];
}

/** Why a MOVE was sent. */
export const MoveReason = {
  /** the host drains and hands the room over */
  DRAIN: 1,
  /** the host lost the room to another claim (after a partition) */
  CLAIM_LOST: 2,
} as const;
export type MessageTypeName = keyof typeof MessageType;

export const CODEC_OPUS = 1;

/**
 * Error codes carried in ERROR messages. Stable numbers: clients switch on them. `retryable` tells a
 * client whether trying again (later, or on another node) can succeed.
 */
export const WireErrorCode = {
  UNSUPPORTED_VERSION: 1,
  BAD_ROOM: 2,
  CAPACITY: 3,
  DRAINING: 4,
  MALFORMED: 5,
  RATE_LIMITED: 6,
  IDLE_TIMEOUT: 7,
  JOIN_TIMEOUT: 8,
  UNEXPECTED_MESSAGE: 9,
  SHUTTING_DOWN: 10,
  INTERNAL: 11,
  /** access control: no grant, or a forged, expired, wrong-room or revoked one; removed; room locked */
  FORBIDDEN: 12,
} as const;
export type WireErrorCodeName = keyof typeof WireErrorCode;

const RETRYABLE: ReadonlySet<number> = new Set([
  WireErrorCode.CAPACITY,
  WireErrorCode.DRAINING,
  WireErrorCode.IDLE_TIMEOUT,
  WireErrorCode.JOIN_TIMEOUT,
  WireErrorCode.SHUTTING_DOWN,
  WireErrorCode.INTERNAL,
  WireErrorCode.RATE_LIMITED,
]);

export function isRetryableErrorCode(code: number): boolean {
  return RETRYABLE.has(code);
}

export function errorCodeName(code: number): string {
  for (const [name, value] of Object.entries(WireErrorCode)) if (value === code) return name;
  return `UNKNOWN_${code}`;
}

export interface JoinMessage {
  type: "JOIN";
  version: number;
  room: string;
  /** empty when the client sent none */
  name: string;
  /** 1.1.0 extensions (absent in version 1) */
  capabilities?: number;
  moveToken?: Uint8Array;
  grant?: Uint8Array;
}

export interface JoinedMessage {
  type: "JOINED";
  version: number;
  participantId: string;
  sampleRate: number;
  channels: number;
  frameSamples: number;
  codec: number;
  /** Suggested uplink bitrate (bit/s). */
  bitrate: number;
  /** Server wall clock, ms since the Unix epoch. */
  serverTimeMs: number;
  /** 1.1.0 extensions (absent in version 1) */
  capabilities?: number;
  epoch?: number;
  role?: number;
  udp?: UdpOffer;
}

/** 1.1.0, server → client: the room lives on another mixer. */
export interface RedirectMessage {
  type: "REDIRECT";
  room: string;
  epoch: number;
  hostPeerId: string;
  /** multiaddrs of the host in text form (without /p2p/ suffix or with it; clients accept both) */
  addrs: string[];
}

/** 1.1.0, server → client: the room moves to `successorPeerId`; JOIN there presenting `token`. */
export interface MoveMessage {
  type: "MOVE";
  room: string;
  epoch: number;
  successorPeerId: string;
  addrs: string[];
  token: Uint8Array;
  reason: number;
}

/** 1.1.0, client → server: a moderator's request, signed (see docs/access.md). */
export interface ModerateMessage {
  type: "MODERATE";
  requestId: number;
  action: number;
  /** a participant id, or for REVOKE a hex id; empty for LOCK, UNLOCK, END */
  target: string;
  /** unix ms: end of a ban or revocation; 0 otherwise */
  until: number;
  signature: Uint8Array;
}

/** 1.1.0, server → client: the outcome of one MODERATE; `code` 0 = done, else a WireErrorCode. */
export interface ModerateResultMessage {
  type: "MODERATE_RESULT";
  requestId: number;
  code: number;
  message: string;
}

/** 1.1.0, server → client: a moderation in the room (`by` = the moderator's participant id). */
export interface ModerationMessage {
  type: "MODERATION";
  action: number;
  target: string;
  by: string;
  until: number;
}

export interface ErrorMessage {
  type: "ERROR";
  code: number;
  message: string;
}

export interface LeaveMessage {
  type: "LEAVE";
}

export interface PingMessage {
  type: "PING";
  nonce: number;
}

export interface PongMessage {
  type: "PONG";
  nonce: number;
}

/** AUDIO (0x10), or AUDIO_VAD (0x11) when `voice` is set. */
export interface AudioMessage extends AudioFrame {
  type: "AUDIO";
}

/** 1.1.0: authenticated datagrams received from the peer on this session so far (uint32, wraps). */
export interface UdpReportMessage {
  type: "UDP_REPORT";
  received: number;
}

/** One source of a listener's mix and what the listener hears of it (linear, 0 = muted for it). */
export interface MixGain {
  participantId: string;
  gain: number;
}

/** 1.1.0, client → server: the complete set of the listener's per-source gains (sources not listed: 1). */
export interface MixSettingsMessage {
  type: "MIX_SETTINGS";
  gains: MixGain[];
}

export type WireMessage =
  | JoinMessage
  | JoinedMessage
  | ErrorMessage
  | LeaveMessage
  | PingMessage
  | PongMessage
  | AudioMessage
  | RedirectMessage
  | MoveMessage
  | RosterMessage
  | UdpReportMessage
  | MixSettingsMessage
  | ModerateMessage
  | ModerateResultMessage
  | ModerationMessage;

/** Why a decode failed; also the `reason` label of `agora_audio_stream_errors_total`. */
export type WireErrorReason =
  | "truncated"
  | "empty"
  | "empty_payload"
  | "bad_type"
  | "oversize"
  | "bad_version"
  | "bad_room"
  | "payload_too_big"
  | "bad_field"
  | "trailing_bytes";

export class WireError extends AgoraError {
  readonly reason: WireErrorReason;
  readonly field: string;
  constructor(reason: WireErrorReason, field: string, message: string) {
    super("WIRE_PROTOCOL", message, { where: field });
    this.name = "WireError";
    this.reason = reason;
    this.field = field;
  }
}

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; error: WireError };

function fail<T>(reason: WireErrorReason, field: string, message: string): DecodeResult<T> {
  return { ok: false, error: new WireError(reason, field, message) };
}

const ROOM_ID_RE = ROOM_ID_PATTERN;
const PARTICIPANT_ID_RE = PARTICIPANT_ID_PATTERN;
// C0/C1 controls, DEL, and bidi overrides that could spoof how a name renders on a dashboard.
// eslint-disable-next-line no-control-regex
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control and bidi characters in names is the point
const NAME_FORBIDDEN_RE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/** Room ids are tokens: 1–64 chars of [A-Za-z0-9._-], starting alphanumeric. Returns why not, or undefined. */
export function checkRoomId(room: string): string | undefined {
  if (room.length === 0) return "room id is empty";
  if (room.length > MAX_ROOM_ID_LENGTH) return `room id is ${room.length} characters long, at most ${MAX_ROOM_ID_LENGTH} allowed`;
  if (!ROOM_ID_RE.test(room)) return `room id "${room}" must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`;
  return undefined;
}

export function isValidRoomId(room: string): boolean {
  return checkRoomId(room) === undefined;
}

export function checkDisplayName(name: string): string | undefined {
  const bytes = utf8.encode(name).byteLength;
  if (bytes > MAX_NAME_BYTES) return `display name is ${bytes} bytes of UTF-8, at most ${MAX_NAME_BYTES} allowed`;
  if (NAME_FORBIDDEN_RE.test(name)) return "display name contains control or bidi-override characters";
  return undefined;
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const ascii = new TextDecoder("latin1");

// ---------------------------------------------------------------------------------------------------------
// Encoding. Inputs come from our own code, so an invalid one is a programming error; it still surfaces as a
// typed WireError rather than silently producing a frame the peer would reject.

function invalid(field: string, message: string): never {
  throw new WireError("bad_field", field, message);
}

function checkU32(field: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) invalid(field, `must be a uint32, got ${v}`);
}

function frameBuffer(bodyLength: number): { buf: Uint8Array; view: DataView } {
  if (bodyLength > MAX_MESSAGE_LENGTH) invalid("length", `message body of ${bodyLength} bytes exceeds ${MAX_MESSAGE_LENGTH}`);
  const buf = new Uint8Array(LENGTH_PREFIX_BYTES + bodyLength);
  const view = new DataView(buf.buffer);
  view.setUint16(0, bodyLength);
  return { buf, view };
}

/** Encodes one message including its length prefix, ready for `stream.send`. */
export function encodeMessage(msg: WireMessage): Uint8Array {
  switch (msg.type) {
    case "JOIN": {
      const roomErr = checkRoomId(msg.room);
      if (roomErr) invalid("join.room", roomErr);
      const nameErr = checkDisplayName(msg.name);
      if (nameErr) invalid("join.name", nameErr);
      if (!Number.isInteger(msg.version) || msg.version < 0 || msg.version > 255)
        invalid("join.version", `must be a uint8, got ${msg.version}`);
      const room = utf8.encode(msg.room);
      const name = utf8.encode(msg.name);
      const ext = msg.version >= WIRE_VERSION_1_1 ? joinExtensions(msg) : EMPTY;
      if (msg.version < WIRE_VERSION_1_1 && (msg.capabilities !== undefined || msg.moveToken || msg.grant))
        invalid("join.version", "extensions need version 2 (/agora/audio/1.1.0)");
      const { buf, view } = frameBuffer(1 + 1 + 1 + room.length + 1 + name.length + ext.length);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.JOIN);
      view.setUint8(o++, msg.version);
      view.setUint8(o++, room.length);
      buf.set(room, o);
      o += room.length;
      view.setUint8(o++, name.length);
      buf.set(name, o);
      o += name.length;
      buf.set(ext, o);
      return buf;
    }
    case "JOINED": {
      if (!PARTICIPANT_ID_RE.test(msg.participantId))
        invalid("joined.participantId", `"${msg.participantId}" is not a valid participant id`);
      checkU32("joined.sampleRate", msg.sampleRate);
      checkU32("joined.bitrate", msg.bitrate);
      if (!Number.isSafeInteger(msg.serverTimeMs) || msg.serverTimeMs < 0)
        invalid("joined.serverTimeMs", `must be a non-negative integer, got ${msg.serverTimeMs}`);
      const pid = utf8.encode(msg.participantId);
      const ext = msg.version >= WIRE_VERSION_1_1 ? joinedExtensions(msg) : EMPTY;
      if (
        msg.version < WIRE_VERSION_1_1 &&
        (msg.capabilities !== undefined || msg.epoch !== undefined || msg.role !== undefined || msg.udp !== undefined)
      )
        invalid("joined.version", "extensions need version 2 (/agora/audio/1.1.0)");
      const { buf, view } = frameBuffer(1 + 1 + 1 + pid.length + 4 + 1 + 2 + 1 + 4 + 8 + ext.length);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.JOINED);
      view.setUint8(o++, msg.version);
      view.setUint8(o++, pid.length);
      buf.set(pid, o);
      o += pid.length;
      view.setUint32(o, msg.sampleRate);
      o += 4;
      view.setUint8(o++, msg.channels);
      view.setUint16(o, msg.frameSamples);
      o += 2;
      view.setUint8(o++, msg.codec);
      view.setUint32(o, msg.bitrate);
      o += 4;
      view.setBigUint64(o, BigInt(msg.serverTimeMs));
      buf.set(ext, o + 8);
      return buf;
    }
    case "REDIRECT":
    case "MOVE":
      return encodePlacement(msg);
    case "ROSTER":
      return encodeRoster(msg);
    case "ERROR": {
      if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xffff) invalid("error.code", `must be a uint16, got ${msg.code}`);
      let text = utf8.encode(msg.message);
      // Truncate rather than fail: an over-long diagnostic must not stop the error from being delivered.
      if (text.length > MAX_ERROR_MESSAGE_BYTES) text = utf8.encode(truncateUtf8(msg.message, MAX_ERROR_MESSAGE_BYTES));
      const { buf, view } = frameBuffer(1 + 2 + 2 + text.length);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.ERROR);
      view.setUint16(o, msg.code);
      o += 2;
      view.setUint16(o, text.length);
      o += 2;
      buf.set(text, o);
      return buf;
    }
    case "LEAVE": {
      const { buf, view } = frameBuffer(1);
      view.setUint8(LENGTH_PREFIX_BYTES, MessageType.LEAVE);
      return buf;
    }
    case "UDP_REPORT": {
      checkU32("udp_report.received", msg.received);
      const { buf, view } = frameBuffer(5);
      view.setUint8(LENGTH_PREFIX_BYTES, MessageType.UDP_REPORT);
      view.setUint32(LENGTH_PREFIX_BYTES + 1, msg.received);
      return buf;
    }
    case "PING":
    case "PONG": {
      checkU32(`${msg.type.toLowerCase()}.nonce`, msg.nonce);
      const { buf, view } = frameBuffer(5);
      view.setUint8(LENGTH_PREFIX_BYTES, MessageType[msg.type]);
      view.setUint32(LENGTH_PREFIX_BYTES + 1, msg.nonce);
      return buf;
    }
    case "AUDIO":
      return encodeAudio(msg);
    case "MIX_SETTINGS":
      return encodeMixSettings(msg);
    case "MODERATE":
    case "MODERATE_RESULT":
    case "MODERATION":
      return encodeAccess(msg);
  }
}

function shortAscii(field: string, s: string, max: number, allowEmpty: boolean): Uint8Array {
  const b = utf8.encode(s);
  if (b.length > max || (!allowEmpty && b.length === 0) || !/^[\x21-\x7e]*$/.test(s))
    invalid(field, `must be ${allowEmpty ? 0 : 1}-${max} printable ASCII characters, got "${s}"`);
  return b;
}

function encodeAccess(msg: ModerateMessage | ModerateResultMessage | ModerationMessage): Uint8Array {
  switch (msg.type) {
    case "MODERATE": {
      checkU32("moderate.requestId", msg.requestId);
      if (!Number.isInteger(msg.action) || msg.action < 0 || msg.action > 255)
        invalid("moderate.action", `must be a uint8, got ${msg.action}`);
      const target = shortAscii("moderate.target", msg.target, MAX_MODERATE_TARGET_BYTES, true);
      if (!Number.isSafeInteger(msg.until) || msg.until < 0) invalid("moderate.until", `must be a unix time in ms, got ${msg.until}`);
      if (msg.signature.length !== MODERATE_SIGNATURE_BYTES) invalid("moderate.signature", `must be 64 bytes, got ${msg.signature.length}`);
      const { buf, view } = frameBuffer(1 + 4 + 1 + 1 + target.length + 8 + 64);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.MODERATE);
      view.setUint32(o, msg.requestId);
      o += 4;
      view.setUint8(o++, msg.action);
      view.setUint8(o++, target.length);
      buf.set(target, o);
      o += target.length;
      view.setBigUint64(o, BigInt(msg.until));
      buf.set(msg.signature, o + 8);
      return buf;
    }
    case "MODERATE_RESULT": {
      checkU32("moderate_result.requestId", msg.requestId);
      if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xffff)
        invalid("moderate_result.code", `must be a uint16, got ${msg.code}`);
      const text = utf8.encode(truncateUtf8(msg.message, 255));
      const { buf, view } = frameBuffer(1 + 4 + 2 + 1 + text.length);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.MODERATE_RESULT);
      view.setUint32(o, msg.requestId);
      o += 4;
      view.setUint16(o, msg.code);
      o += 2;
      view.setUint8(o++, text.length);
      buf.set(text, o);
      return buf;
    }
    case "MODERATION": {
      if (!Number.isInteger(msg.action) || msg.action < 0 || msg.action > 255)
        invalid("moderation.action", `must be a uint8, got ${msg.action}`);
      const target = shortAscii("moderation.target", msg.target, MAX_MODERATE_TARGET_BYTES, true);
      const by = shortAscii("moderation.by", msg.by, MAX_PARTICIPANT_ID_LENGTH, false);
      if (!Number.isSafeInteger(msg.until) || msg.until < 0) invalid("moderation.until", `must be a unix time in ms, got ${msg.until}`);
      const { buf, view } = frameBuffer(1 + 1 + 1 + target.length + 1 + by.length + 8);
      let o = LENGTH_PREFIX_BYTES;
      view.setUint8(o++, MessageType.MODERATION);
      view.setUint8(o++, msg.action);
      view.setUint8(o++, target.length);
      buf.set(target, o);
      o += target.length;
      view.setUint8(o++, by.length);
      buf.set(by, o);
      o += by.length;
      view.setBigUint64(o, BigInt(msg.until));
      return buf;
    }
  }
}

/** `flags:u8 (0), count:u8, (idLen:u8, participantId, gain:u16 thousandths)×count`. */
function encodeMixSettings(msg: MixSettingsMessage): Uint8Array {
  if (msg.gains.length > MAX_MIX_ENTRIES) invalid("mix_settings.count", `${msg.gains.length} entries, at most ${MAX_MIX_ENTRIES}`);
  const seen = new Set<string>();
  const ids = msg.gains.map((g, i) => {
    if (!PARTICIPANT_ID_RE.test(g.participantId))
      invalid(`mix_settings.entries[${i}].participantId`, `"${g.participantId}" is not a valid participant id`);
    if (seen.has(g.participantId)) invalid(`mix_settings.entries[${i}].participantId`, `"${g.participantId}" is listed twice`);
    seen.add(g.participantId);
    if (!(g.gain >= 0 && g.gain <= MAX_MIX_GAIN)) invalid(`mix_settings.entries[${i}].gain`, `must be 0..${MAX_MIX_GAIN}, got ${g.gain}`);
    return utf8.encode(g.participantId);
  });
  let size = 1 + 1 + 1;
  for (const id of ids) size += 1 + id.length + 2;
  const { buf, view } = frameBuffer(size);
  let o = LENGTH_PREFIX_BYTES;
  view.setUint8(o++, MessageType.MIX_SETTINGS);
  view.setUint8(o++, 0);
  view.setUint8(o++, ids.length);
  for (const [i, id] of ids.entries()) {
    view.setUint8(o++, id.length);
    buf.set(id, o);
    o += id.length;
    view.setUint16(o, Math.round(msg.gains[i]!.gain * MIX_GAIN_UNIT));
    o += 2;
  }
  return buf;
}

/**
 * Hot path (50 frames/s per participant and direction): one allocation, one copy of the payload. A frame
 * with `voice` set becomes AUDIO_VAD (only on a session where both sides announced VOICE_ACTIVITY).
 */
export function encodeAudio(frame: AudioFrame): Uint8Array {
  const n = frame.payload.byteLength;
  if (n === 0) invalid("audio.payload", "Opus payload is empty");
  if (n > MAX_OPUS_PAYLOAD)
    throw new WireError("payload_too_big", "audio.payload", `Opus payload of ${n} bytes exceeds ${MAX_OPUS_PAYLOAD}`);
  checkU32("audio.seq", frame.seq);
  checkU32("audio.timestamp", frame.timestamp);
  const vad = frame.voice !== undefined;
  const head = vad ? 10 : 9;
  const { buf, view } = frameBuffer(head + n);
  view.setUint8(2, vad ? MessageType.AUDIO_VAD : MessageType.AUDIO);
  view.setUint32(3, frame.seq);
  view.setUint32(7, frame.timestamp);
  if (vad) view.setUint8(11, frame.voice ? AudioVadFlag.VOICE : 0);
  buf.set(frame.payload, 2 + head);
  return buf;
}

const EMPTY = new Uint8Array(0);

/** `tag:u8 | length:u16 | value[length]` for each entry, in the order given. */
function encodeExtensionList(field: string, entries: Array<[number, Uint8Array]>): Uint8Array {
  let total = 0;
  for (const [tag, value] of entries) {
    if (value.length > MAX_EXTENSION_BYTES) invalid(`${field}.${tag}`, `extension of ${value.length} bytes exceeds ${MAX_EXTENSION_BYTES}`);
    total += 3 + value.length;
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let o = 0;
  for (const [tag, value] of entries) {
    view.setUint8(o, tag);
    view.setUint16(o + 1, value.length);
    out.set(value, o + 3);
    o += 3 + value.length;
  }
  return out;
}

function u32Bytes(field: string, v: number): Uint8Array {
  checkU32(field, v);
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}

function joinExtensions(msg: JoinMessage): Uint8Array {
  const entries: Array<[number, Uint8Array]> = [];
  if (msg.capabilities !== undefined) entries.push([JoinExtension.CAPABILITIES, u32Bytes("join.capabilities", msg.capabilities)]);
  if (msg.moveToken !== undefined) {
    if (msg.moveToken.length === 0 || msg.moveToken.length > MAX_MOVE_TOKEN_BYTES)
      invalid("join.moveToken", `must be 1-${MAX_MOVE_TOKEN_BYTES} bytes, got ${msg.moveToken.length}`);
    entries.push([JoinExtension.MOVE_TOKEN, msg.moveToken]);
  }
  if (msg.grant !== undefined) {
    if (msg.grant.length === 0) invalid("join.grant", "grant is empty");
    entries.push([JoinExtension.GRANT, msg.grant]);
  }
  return encodeExtensionList("join", entries);
}

function joinedExtensions(msg: JoinedMessage): Uint8Array {
  const entries: Array<[number, Uint8Array]> = [];
  if (msg.capabilities !== undefined) entries.push([JoinedExtension.CAPABILITIES, u32Bytes("joined.capabilities", msg.capabilities)]);
  if (msg.epoch !== undefined) entries.push([JoinedExtension.EPOCH, u32Bytes("joined.epoch", msg.epoch)]);
  if (msg.role !== undefined) {
    if (!Number.isInteger(msg.role) || msg.role < 0 || msg.role > 255) invalid("joined.role", `must be a uint8, got ${msg.role}`);
    entries.push([JoinedExtension.ROLE, Uint8Array.of(msg.role)]);
  }
  if (msg.udp !== undefined) entries.push([JoinedExtension.UDP_OFFER, encodeUdpOffer(msg.udp)]);
  return encodeExtensionList("joined", entries);
}

/** `sessionId:u32 | port:u16 | key[32] | addrCount:u8 | (addrLen:u8, addr)×addrCount` */
function encodeUdpOffer(offer: UdpOffer): Uint8Array {
  checkU32("joined.udp.sessionId", offer.sessionId);
  if (!Number.isInteger(offer.port) || offer.port < 1 || offer.port > 0xffff)
    invalid("joined.udp.port", `must be 1-65535, got ${offer.port}`);
  if (offer.key.length !== 32) invalid("joined.udp.key", `must be 32 bytes, got ${offer.key.length}`);
  if (offer.addrs.length > MAX_UDP_OFFER_ADDRS)
    invalid("joined.udp.addrs", `${offer.addrs.length} addresses, at most ${MAX_UDP_OFFER_ADDRS}`);
  const addrs = offer.addrs.map((a, i) => {
    const b = utf8.encode(a);
    if (b.length === 0 || b.length > MAX_UDP_OFFER_ADDR_BYTES || !isIpLiteral(a))
      invalid(`joined.udp.addrs[${i}]`, `"${a}" is not an IP address of 1-${MAX_UDP_OFFER_ADDR_BYTES} characters`);
    return b;
  });
  const out = new Uint8Array(4 + 2 + 32 + 1 + addrs.reduce((n, a) => n + 1 + a.length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, offer.sessionId);
  view.setUint16(4, offer.port);
  out.set(offer.key, 6);
  out[38] = addrs.length;
  let o = 39;
  for (const a of addrs) {
    out[o++] = a.length;
    out.set(a, o);
    o += a.length;
  }
  return out;
}

function decodeUdpOffer(v: Uint8Array): UdpOffer | WireError {
  const bad = (msg: string) => new WireError("bad_field", "joined.udp", msg);
  if (v.length < 39) return bad(`UDP offer of ${v.length} bytes, needs at least 39`);
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const port = view.getUint16(4);
  if (port === 0) return bad("UDP offer port 0");
  const count = v[38]!;
  if (count > MAX_UDP_OFFER_ADDRS) return bad(`${count} addresses, at most ${MAX_UDP_OFFER_ADDRS}`);
  const addrs: string[] = [];
  let o = 39;
  for (let i = 0; i < count; i++) {
    const len = v[o];
    if (len === undefined || o + 1 + len > v.length)
      return new WireError("truncated", "joined.udp", `UDP offer address ${i} runs past the extension`);
    const a = ascii.decode(v.subarray(o + 1, o + 1 + len));
    if (len === 0 || len > MAX_UDP_OFFER_ADDR_BYTES || !isIpLiteral(a))
      return bad(`UDP offer address ${i} "${a.slice(0, 60)}" is not an IP address`);
    addrs.push(a);
    o += 1 + len;
  }
  if (o !== v.length) return new WireError("trailing_bytes", "joined.udp", `UDP offer has ${v.length - o} unexpected trailing bytes`);
  return { sessionId: view.getUint32(0), port, key: v.slice(6, 38), addrs };
}

/** REDIRECT: `room, epoch:u32, peer, addrs`; MOVE adds `token` and `reason:u8`. Strings are u8-length-prefixed, addrs u16. */
function encodePlacement(msg: RedirectMessage | MoveMessage): Uint8Array {
  const f = msg.type.toLowerCase();
  const roomErr = checkRoomId(msg.room);
  if (roomErr) invalid(`${f}.room`, roomErr);
  checkU32(`${f}.epoch`, msg.epoch);
  const peer = msg.type === "REDIRECT" ? msg.hostPeerId : msg.successorPeerId;
  if (!PEER_ID_PATTERN.test(peer)) invalid(`${f}.peer`, `"${peer}" is not an Ed25519 peer id`);
  if (msg.addrs.length > MAX_REDIRECT_ADDRS) invalid(`${f}.addrs`, `${msg.addrs.length} addresses, at most ${MAX_REDIRECT_ADDRS}`);
  const addrs = msg.addrs.map((a, i) => {
    const b = utf8.encode(a);
    if (b.length === 0 || b.length > MAX_ADDR_BYTES || !a.startsWith("/"))
      invalid(`${f}.addrs[${i}]`, `"${a}" is not a multiaddr of 1-${MAX_ADDR_BYTES} bytes`);
    return b;
  });
  const room = utf8.encode(msg.room);
  const peerBytes = utf8.encode(peer);
  let size = 1 + 1 + room.length + 4 + 1 + peerBytes.length + 1;
  for (const a of addrs) size += 2 + a.length;
  if (msg.type === "MOVE") {
    if (msg.token.length === 0 || msg.token.length > MAX_MOVE_TOKEN_BYTES)
      invalid("move.token", `must be 1-${MAX_MOVE_TOKEN_BYTES} bytes, got ${msg.token.length}`);
    if (!Number.isInteger(msg.reason) || msg.reason < 0 || msg.reason > 255) invalid("move.reason", `must be a uint8, got ${msg.reason}`);
    size += 2 + msg.token.length + 1;
  }
  const { buf, view } = frameBuffer(size);
  let o = LENGTH_PREFIX_BYTES;
  view.setUint8(o++, MessageType[msg.type]);
  view.setUint8(o++, room.length);
  buf.set(room, o);
  o += room.length;
  view.setUint32(o, msg.epoch);
  o += 4;
  view.setUint8(o++, peerBytes.length);
  buf.set(peerBytes, o);
  o += peerBytes.length;
  view.setUint8(o++, addrs.length);
  for (const a of addrs) {
    view.setUint16(o, a.length);
    buf.set(a, o + 2);
    o += 2 + a.length;
  }
  if (msg.type === "MOVE") {
    view.setUint16(o, msg.token.length);
    buf.set(msg.token, o + 2);
    o += 2 + msg.token.length;
    view.setUint8(o, msg.reason);
  }
  return buf;
}

function truncateUtf8(s: string, maxBytes: number): string {
  let out = "";
  let bytes = 0;
  for (const ch of s) {
    const b = utf8.encode(ch).length;
    if (bytes + b > maxBytes) break;
    out += ch;
    bytes += b;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

/** Bounds-checked cursor over one message body; every read names the field it reads. */
class Reader {
  private o = 1; // byte 0 is the type
  constructor(
    private readonly body: Uint8Array,
    private readonly view: DataView,
    readonly msg: string,
  ) {}
  get remaining(): number {
    return this.body.length - this.o;
  }
  private need(n: number, field: string): WireError | undefined {
    if (this.remaining < n)
      return new WireError("truncated", `${this.msg}.${field}`, `${this.msg} truncated: ${field} needs ${n} bytes, ${this.remaining} left`);
    return undefined;
  }
  u8(field: string): number | WireError {
    const e = this.need(1, field);
    if (e) return e;
    return this.view.getUint8(this.o++);
  }
  u16(field: string): number | WireError {
    const e = this.need(2, field);
    if (e) return e;
    const v = this.view.getUint16(this.o);
    this.o += 2;
    return v;
  }
  u32(field: string): number | WireError {
    const e = this.need(4, field);
    if (e) return e;
    const v = this.view.getUint32(this.o);
    this.o += 4;
    return v;
  }
  u64(field: string): number | WireError {
    const e = this.need(8, field);
    if (e) return e;
    const v = this.view.getBigUint64(this.o);
    this.o += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) return new WireError("bad_field", `${this.msg}.${field}`, `${field} ${v} exceeds 2^53-1`);
    return Number(v);
  }
  bytes(n: number, field: string): Uint8Array | WireError {
    const e = this.need(n, field);
    if (e) return e;
    const v = this.body.subarray(this.o, this.o + n);
    this.o += n;
    return v;
  }
  rest(): Uint8Array {
    const v = this.body.subarray(this.o);
    this.o = this.body.length;
    return v;
  }
  end(): WireError | undefined {
    if (this.remaining > 0) return new WireError("trailing_bytes", this.msg, `${this.msg} has ${this.remaining} unexpected trailing bytes`);
    return undefined;
  }
}

function isErr(v: unknown): v is WireError {
  return v instanceof WireError;
}

/**
 * Decodes one message body (without its length prefix). The returned AUDIO payload is a view into `body`;
 * callers that keep it beyond the current event must copy it.
 */
export function decodeMessage(body: Uint8Array): DecodeResult<WireMessage> {
  if (body.length === 0) return fail("empty", "type", "empty message (length 0)");
  if (body.length > MAX_MESSAGE_LENGTH) return fail("oversize", "length", `message of ${body.length} bytes exceeds ${MAX_MESSAGE_LENGTH}`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const type = body[0]!;
  switch (type) {
    case MessageType.AUDIO: {
      if (body.length < 9) return fail("truncated", "audio.header", `AUDIO truncated: ${body.length} bytes, header needs 9`);
      const payloadLength = body.length - 9;
      if (payloadLength === 0) return fail("empty_payload", "audio.payload", "AUDIO has an empty Opus payload");
      if (payloadLength > MAX_OPUS_PAYLOAD)
        return fail("payload_too_big", "audio.payload", `Opus payload of ${payloadLength} bytes exceeds ${MAX_OPUS_PAYLOAD}`);
      return { ok: true, value: { type: "AUDIO", seq: view.getUint32(1), timestamp: view.getUint32(5), payload: body.subarray(9) } };
    }
    case MessageType.AUDIO_VAD: {
      if (body.length < 10) return fail("truncated", "audio_vad.header", `AUDIO_VAD truncated: ${body.length} bytes, header needs 10`);
      const flags = body[9]!;
      if ((flags & ~AudioVadFlag.VOICE) !== 0)
        return fail("bad_field", "audio_vad.flags", `reserved AUDIO_VAD flag bits set (0x${flags.toString(16).padStart(2, "0")})`);
      const payloadLength = body.length - 10;
      if (payloadLength === 0) return fail("empty_payload", "audio_vad.payload", "AUDIO_VAD has an empty Opus payload");
      if (payloadLength > MAX_OPUS_PAYLOAD)
        return fail("payload_too_big", "audio_vad.payload", `Opus payload of ${payloadLength} bytes exceeds ${MAX_OPUS_PAYLOAD}`);
      return {
        ok: true,
        value: {
          type: "AUDIO",
          seq: view.getUint32(1),
          timestamp: view.getUint32(5),
          voice: (flags & AudioVadFlag.VOICE) !== 0,
          payload: body.subarray(10),
        },
      };
    }
    case MessageType.MIX_SETTINGS:
      return decodeMixSettings(new Reader(body, view, "mix_settings"));
    case MessageType.JOIN:
      return decodeJoin(new Reader(body, view, "join"));
    case MessageType.JOINED:
      return decodeJoined(new Reader(body, view, "joined"));
    case MessageType.ERROR: {
      const r = new Reader(body, view, "error");
      const code = r.u16("code");
      if (isErr(code)) return { ok: false, error: code };
      const len = r.u16("messageLength");
      if (isErr(len)) return { ok: false, error: len };
      if (len > MAX_ERROR_MESSAGE_BYTES)
        return fail("bad_field", "error.messageLength", `message of ${len} bytes exceeds ${MAX_ERROR_MESSAGE_BYTES}`);
      const text = r.bytes(len, "message");
      if (isErr(text)) return { ok: false, error: text };
      const end = r.end();
      if (end) return { ok: false, error: end };
      const message = decodeUtf8(text);
      if (message === undefined) return fail("bad_field", "error.message", "message is not valid UTF-8");
      return { ok: true, value: { type: "ERROR", code, message } };
    }
    case MessageType.LEAVE: {
      const end = new Reader(body, view, "leave").end();
      if (end) return { ok: false, error: end };
      return { ok: true, value: { type: "LEAVE" } };
    }
    case MessageType.REDIRECT:
      return decodePlacement(new Reader(body, view, "redirect"), "REDIRECT");
    case MessageType.MOVE:
      return decodePlacement(new Reader(body, view, "move"), "MOVE");
    case MessageType.ROSTER:
      return decodeRoster(new Reader(body, view, "roster"));
    case MessageType.UDP_REPORT: {
      const r = new Reader(body, view, "udp_report");
      const received = r.u32("received");
      if (isErr(received)) return { ok: false, error: received };
      const end = r.end();
      if (end) return { ok: false, error: end };
      return { ok: true, value: { type: "UDP_REPORT", received } };
    }
    case MessageType.PING:
    case MessageType.PONG: {
      const name = type === MessageType.PING ? "PING" : "PONG";
      const r = new Reader(body, view, name.toLowerCase());
      const nonce = r.u32("nonce");
      if (isErr(nonce)) return { ok: false, error: nonce };
      const end = r.end();
      if (end) return { ok: false, error: end };
      return { ok: true, value: { type: name, nonce } };
    }
    case MessageType.MODERATE:
    case MessageType.MODERATE_RESULT:
    case MessageType.MODERATION:
      return decodeAccess(body, view, type);
    default:
      return fail("bad_type", "type", `unknown message type 0x${type.toString(16).padStart(2, "0")}`);
  }
}

function readShortAscii(r: Reader, field: string, max: number, allowEmpty: boolean): string | WireError {
  const len = r.u8(`${field}Length`);
  if (isErr(len)) return len;
  if (len > max || (!allowEmpty && len === 0))
    return new WireError("bad_field", `${r.msg}.${field}`, `${field} length ${len} is outside ${allowEmpty ? 0 : 1}-${max}`);
  const b = r.bytes(len, field);
  if (isErr(b)) return b;
  for (const c of b) if (c < 0x21 || c > 0x7e) return new WireError("bad_field", `${r.msg}.${field}`, `${field} is not printable ASCII`);
  return String.fromCharCode(...b);
}

function decodeAccess(body: Uint8Array, view: DataView, type: number): DecodeResult<WireMessage> {
  const name = type === MessageType.MODERATE ? "moderate" : type === MessageType.MODERATE_RESULT ? "moderate_result" : "moderation";
  const r = new Reader(body, view, name);
  const done = <T extends WireMessage>(value: T): DecodeResult<WireMessage> => {
    const end = r.end();
    return end ? { ok: false, error: end } : { ok: true, value };
  };
  if (type === MessageType.MODERATE_RESULT) {
    const requestId = r.u32("requestId");
    if (isErr(requestId)) return { ok: false, error: requestId };
    const code = r.u16("code");
    if (isErr(code)) return { ok: false, error: code };
    const len = r.u8("messageLength");
    if (isErr(len)) return { ok: false, error: len };
    const text = r.bytes(len, "message");
    if (isErr(text)) return { ok: false, error: text };
    const message = decodeUtf8(text);
    if (message === undefined) return fail("bad_field", "moderate_result.message", "message is not valid UTF-8");
    return done({ type: "MODERATE_RESULT", requestId, code, message });
  }
  let requestId = 0;
  if (type === MessageType.MODERATE) {
    const id = r.u32("requestId");
    if (isErr(id)) return { ok: false, error: id };
    requestId = id;
  }
  const action = r.u8("action");
  if (isErr(action)) return { ok: false, error: action };
  const target = readShortAscii(r, "target", MAX_MODERATE_TARGET_BYTES, true);
  if (isErr(target)) return { ok: false, error: target };
  if (type === MessageType.MODERATION) {
    const by = readShortAscii(r, "by", MAX_PARTICIPANT_ID_LENGTH, false);
    if (isErr(by)) return { ok: false, error: by };
    const until = r.u64("until");
    if (isErr(until)) return { ok: false, error: until };
    return done({ type: "MODERATION", action, target, by, until });
  }
  const until = r.u64("until");
  if (isErr(until)) return { ok: false, error: until };
  const signature = r.bytes(MODERATE_SIGNATURE_BYTES, "signature");
  if (isErr(signature)) return { ok: false, error: signature };
  return done({ type: "MODERATE", requestId, action, target, until, signature: signature.slice() });
}

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    return undefined;
  }
}

function decodeMixSettings(r: Reader): DecodeResult<WireMessage> {
  const flags = r.u8("flags");
  if (isErr(flags)) return { ok: false, error: flags };
  if (flags !== 0) return fail("bad_field", "mix_settings.flags", `reserved MIX_SETTINGS flags must be 0, got ${flags}`);
  const count = r.u8("count");
  if (isErr(count)) return { ok: false, error: count };
  if (count > MAX_MIX_ENTRIES) return fail("bad_field", "mix_settings.count", `${count} entries, at most ${MAX_MIX_ENTRIES}`);
  const gains: MixGain[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const field = `entries[${i}]`;
    const len = r.u8(`${field}.idLength`);
    if (isErr(len)) return { ok: false, error: len };
    const idBytes = r.bytes(len, `${field}.participantId`);
    if (isErr(idBytes)) return { ok: false, error: idBytes };
    const participantId = decodeUtf8(idBytes);
    if (participantId === undefined || !PARTICIPANT_ID_RE.test(participantId))
      return fail("bad_field", `mix_settings.${field}.participantId`, "not a valid participant id");
    if (seen.has(participantId))
      return fail("bad_field", `mix_settings.${field}.participantId`, `participant ${participantId} is listed twice`);
    seen.add(participantId);
    const g = r.u16(`${field}.gain`);
    if (isErr(g)) return { ok: false, error: g };
    if (g > MAX_MIX_GAIN * MIX_GAIN_UNIT)
      return fail("bad_field", `mix_settings.${field}.gain`, `gain ${g} exceeds ${MAX_MIX_GAIN * MIX_GAIN_UNIT} (+12 dB)`);
    gains.push({ participantId, gain: g / MIX_GAIN_UNIT });
  }
  const end = r.end();
  if (end) return { ok: false, error: end };
  return { ok: true, value: { type: "MIX_SETTINGS", gains } };
}

function decodeJoin(r: Reader): DecodeResult<WireMessage> {
  const version = r.u8("version");
  if (isErr(version)) return { ok: false, error: version };
  // Checked before anything else: a future version may lay the rest out differently, and its client
  // deserves "unsupported version", not a confusing parse error.
  if (!SUPPORTED_WIRE_VERSIONS.includes(version))
    return fail(
      "bad_version",
      "join.version",
      `unsupported protocol version ${version}; this node speaks ${SUPPORTED_WIRE_VERSIONS.join(", ")}`,
    );
  const roomLen = r.u8("roomLength");
  if (isErr(roomLen)) return { ok: false, error: roomLen };
  if (roomLen === 0 || roomLen > MAX_ROOM_ID_LENGTH)
    return fail("bad_room", "join.room", `room id length ${roomLen} is outside 1-${MAX_ROOM_ID_LENGTH}`);
  const roomBytes = r.bytes(roomLen, "room");
  if (isErr(roomBytes)) return { ok: false, error: roomBytes };
  const room = ascii.decode(roomBytes);
  const roomErr = checkRoomId(room);
  if (roomErr) return fail("bad_room", "join.room", roomErr);
  const nameLen = r.u8("nameLength");
  if (isErr(nameLen)) return { ok: false, error: nameLen };
  if (nameLen > MAX_NAME_BYTES) return fail("bad_field", "join.name", `display name of ${nameLen} bytes exceeds ${MAX_NAME_BYTES}`);
  const nameBytes = r.bytes(nameLen, "name");
  if (isErr(nameBytes)) return { ok: false, error: nameBytes };
  const name = decodeUtf8(nameBytes);
  if (name === undefined) return fail("bad_field", "join.name", "display name is not valid UTF-8");
  const nameErr = checkDisplayName(name);
  if (nameErr) return fail("bad_field", "join.name", nameErr);
  const join: JoinMessage = { type: "JOIN", version, room, name };
  if (version >= WIRE_VERSION_1_1) {
    const ext = readExtensions(r);
    if (isErr(ext)) return { ok: false, error: ext };
    const caps = ext.get(JoinExtension.CAPABILITIES);
    if (caps !== undefined) {
      if (caps.length !== 4) return fail("bad_field", "join.capabilities", `capabilities must be 4 bytes, got ${caps.length}`);
      join.capabilities = new DataView(caps.buffer, caps.byteOffset, 4).getUint32(0);
    }
    const token = ext.get(JoinExtension.MOVE_TOKEN);
    if (token !== undefined) {
      if (token.length === 0 || token.length > MAX_MOVE_TOKEN_BYTES)
        return fail("bad_field", "join.moveToken", `move token must be 1-${MAX_MOVE_TOKEN_BYTES} bytes, got ${token.length}`);
      join.moveToken = token;
    }
    const grant = ext.get(JoinExtension.GRANT);
    if (grant !== undefined) {
      if (grant.length === 0) return fail("bad_field", "join.grant", "grant is empty");
      join.grant = grant;
    }
  }
  const end = r.end();
  if (end) return { ok: false, error: end };
  return { ok: true, value: join };
}

/**
 * Reads `tag:u8 | length:u16 | value` entries up to the end of the body. Unknown tags are kept (callers
 * ignore them); a repeated tag or an entry running past the end is an error.
 */
function readExtensions(r: Reader): Map<number, Uint8Array> | WireError {
  const out = new Map<number, Uint8Array>();
  while (r.remaining > 0) {
    const tag = r.u8("extension.tag");
    if (isErr(tag)) return tag;
    const len = r.u16(`extension[${tag}].length`);
    if (isErr(len)) return len;
    if (len > MAX_EXTENSION_BYTES)
      return new WireError("bad_field", `${r.msg}.extension[${tag}]`, `extension of ${len} bytes exceeds ${MAX_EXTENSION_BYTES}`);
    const value = r.bytes(len, `extension[${tag}]`);
    if (isErr(value)) return value;
    if (out.has(tag)) return new WireError("bad_field", `${r.msg}.extension[${tag}]`, `extension tag ${tag} appears twice`);
    out.set(tag, value);
  }
  return out;
}

function decodePlacement(r: Reader, type: "REDIRECT" | "MOVE"): DecodeResult<WireMessage> {
  const f = r.msg;
  const roomLen = r.u8("roomLength");
  if (isErr(roomLen)) return { ok: false, error: roomLen };
  const roomBytes = r.bytes(roomLen, "room");
  if (isErr(roomBytes)) return { ok: false, error: roomBytes };
  const room = ascii.decode(roomBytes);
  const roomErr = checkRoomId(room);
  if (roomErr) return fail("bad_room", `${f}.room`, roomErr);
  const epoch = r.u32("epoch");
  if (isErr(epoch)) return { ok: false, error: epoch };
  const peerLen = r.u8("peerLength");
  if (isErr(peerLen)) return { ok: false, error: peerLen };
  const peerBytes = r.bytes(peerLen, "peer");
  if (isErr(peerBytes)) return { ok: false, error: peerBytes };
  const peer = ascii.decode(peerBytes);
  if (!PEER_ID_PATTERN.test(peer)) return fail("bad_field", `${f}.peer`, `"${peer.slice(0, 80)}" is not an Ed25519 peer id`);
  const count = r.u8("addrCount");
  if (isErr(count)) return { ok: false, error: count };
  if (count > MAX_REDIRECT_ADDRS) return fail("bad_field", `${f}.addrs`, `${count} addresses, at most ${MAX_REDIRECT_ADDRS}`);
  const addrs: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = r.u16(`addrs[${i}].length`);
    if (isErr(len)) return { ok: false, error: len };
    if (len === 0 || len > MAX_ADDR_BYTES)
      return fail("bad_field", `${f}.addrs[${i}]`, `address of ${len} bytes is outside 1-${MAX_ADDR_BYTES}`);
    const b = r.bytes(len, `addrs[${i}]`);
    if (isErr(b)) return { ok: false, error: b };
    const a = decodeUtf8(b);
    if (a === undefined || !a.startsWith("/")) return fail("bad_field", `${f}.addrs[${i}]`, "address is not a multiaddr in text form");
    addrs.push(a);
  }
  if (type === "REDIRECT") {
    const end = r.end();
    if (end) return { ok: false, error: end };
    return { ok: true, value: { type, room, epoch, hostPeerId: peer, addrs } };
  }
  const tokenLen = r.u16("tokenLength");
  if (isErr(tokenLen)) return { ok: false, error: tokenLen };
  if (tokenLen === 0 || tokenLen > MAX_MOVE_TOKEN_BYTES)
    return fail("bad_field", "move.token", `move token must be 1-${MAX_MOVE_TOKEN_BYTES} bytes, got ${tokenLen}`);
  const token = r.bytes(tokenLen, "token");
  if (isErr(token)) return { ok: false, error: token };
  const reason = r.u8("reason");
  if (isErr(reason)) return { ok: false, error: reason };
  const end = r.end();
  if (end) return { ok: false, error: end };
  return { ok: true, value: { type, room, epoch, successorPeerId: peer, addrs, token, reason } };
}

function decodeJoined(r: Reader): DecodeResult<WireMessage> {
  const version = r.u8("version");
  if (isErr(version)) return { ok: false, error: version };
  if (!SUPPORTED_WIRE_VERSIONS.includes(version))
    return fail(
      "bad_version",
      "joined.version",
      `unsupported protocol version ${version}; this client speaks ${SUPPORTED_WIRE_VERSIONS.join(", ")}`,
    );
  const pidLen = r.u8("participantIdLength");
  if (isErr(pidLen)) return { ok: false, error: pidLen };
  const pidBytes = r.bytes(pidLen, "participantId");
  if (isErr(pidBytes)) return { ok: false, error: pidBytes };
  const participantId = ascii.decode(pidBytes);
  if (!PARTICIPANT_ID_RE.test(participantId))
    return fail("bad_field", "joined.participantId", `"${participantId}" is not a valid participant id`);
  const sampleRate = r.u32("sampleRate");
  if (isErr(sampleRate)) return { ok: false, error: sampleRate };
  const channels = r.u8("channels");
  if (isErr(channels)) return { ok: false, error: channels };
  const frameSamples = r.u16("frameSamples");
  if (isErr(frameSamples)) return { ok: false, error: frameSamples };
  const codec = r.u8("codec");
  if (isErr(codec)) return { ok: false, error: codec };
  const bitrate = r.u32("bitrate");
  if (isErr(bitrate)) return { ok: false, error: bitrate };
  const serverTimeMs = r.u64("serverTimeMs");
  if (isErr(serverTimeMs)) return { ok: false, error: serverTimeMs };
  const extra: Pick<JoinedMessage, "capabilities" | "epoch" | "role" | "udp"> = {};
  if (version >= WIRE_VERSION_1_1) {
    const ext = readExtensions(r);
    if (isErr(ext)) return { ok: false, error: ext };
    for (const [tag, key] of [
      [JoinedExtension.CAPABILITIES, "capabilities"],
      [JoinedExtension.EPOCH, "epoch"],
    ] as const) {
      const v = ext.get(tag);
      if (v === undefined) continue;
      if (v.length !== 4) return fail("bad_field", `joined.${key}`, `${key} must be 4 bytes, got ${v.length}`);
      extra[key] = new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
    }
    const role = ext.get(JoinedExtension.ROLE);
    if (role !== undefined) {
      if (role.length !== 1) return fail("bad_field", "joined.role", `role must be 1 byte, got ${role.length}`);
      extra.role = role[0];
    }
    const udp = ext.get(JoinedExtension.UDP_OFFER);
    if (udp !== undefined) {
      const offer = decodeUdpOffer(udp);
      if (isErr(offer)) return { ok: false, error: offer };
      extra.udp = offer;
    }
  }
  const end = r.end();
  if (end) return { ok: false, error: end };
  // v1 fixes the codec parameters; a server announcing others is one this client cannot talk to.
  if (sampleRate !== SAMPLE_RATE || channels !== CHANNELS || frameSamples !== FRAME_SAMPLES || codec !== CODEC_OPUS)
    return fail(
      "bad_field",
      "joined.codec",
      `unsupported codec parameters: codec ${codec}, ${sampleRate} Hz, ${channels} channel(s), ${frameSamples} samples/frame`,
    );
  return {
    ok: true,
    value: { type: "JOINED", version, participantId, sampleRate, channels, frameSamples, codec, bitrate, serverTimeMs, ...extra },
  };
}

/**
 * Incremental splitter for a byte stream of length-prefixed messages. Chunks arrive cut anywhere (yamux and
 * TCP do not preserve message boundaries); partial messages are carried over. At most one message worth of
 * bytes (MAX_MESSAGE_LENGTH + 2) is ever held, however the peer sends.
 */
export class MessageDecoder {
  private pending: Uint8Array = new Uint8Array(0);
  private failed: WireError | undefined;

  /** Bytes of an incomplete message held back (non-zero at end of stream means a truncated message). */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  /**
   * Feeds one chunk. Returns the messages completed by it, in order, and the first error if the stream is
   * malformed; messages before the error are valid and returned. After an error the decoder refuses more
   * input (the stream must be closed: message boundaries can no longer be trusted).
   */
  push(chunk: Uint8Array): { messages: WireMessage[]; error?: WireError } {
    const messages: WireMessage[] = [];
    if (this.failed) return { messages, error: this.failed };
    let data: Uint8Array;
    if (this.pending.length === 0) data = chunk;
    else {
      data = new Uint8Array(this.pending.length + chunk.length);
      data.set(this.pending, 0);
      data.set(chunk, this.pending.length);
    }
    let o = 0;
    while (data.length - o >= LENGTH_PREFIX_BYTES) {
      const len = (data[o]! << 8) | data[o + 1]!;
      if (len === 0) return this.fail(messages, new WireError("empty", "length", "message length is 0"));
      if (len > MAX_MESSAGE_LENGTH)
        return this.fail(messages, new WireError("oversize", "length", `message length ${len} exceeds ${MAX_MESSAGE_LENGTH}`));
      if (data.length - o - LENGTH_PREFIX_BYTES < len) break;
      // Copy so that the message (and an AUDIO payload view into it) never aliases the transport's buffers.
      const body = data.slice(o + LENGTH_PREFIX_BYTES, o + LENGTH_PREFIX_BYTES + len);
      o += LENGTH_PREFIX_BYTES + len;
      const r = decodeMessage(body);
      if (!r.ok) return this.fail(messages, r.error);
      messages.push(r.value);
    }
    this.pending = o === data.length ? new Uint8Array(0) : data.slice(o);
    return { messages };
  }

  private fail(messages: WireMessage[], error: WireError): { messages: WireMessage[]; error: WireError } {
    this.failed = error;
    this.pending = new Uint8Array(0);
    return { messages, error };
  }
}

/** Serial-number distance `a - b` of two uint32 sequence numbers (RFC 1982), in (-2^31, 2^31]. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** Duration of one Opus frame by TOC configuration (RFC 6716 §3.1, Table 2), in units of 0.5 ms. */
function opusFrameHalfMs(config: number): number {
  if (config < 12) return [20, 40, 80, 120][config & 3]!; // SILK-only: 10, 20, 40, 60 ms
  if (config < 16) return [20, 40][config & 1]!; // Hybrid: 10, 20 ms
  return [5, 10, 20, 40][config & 3]!; // CELT-only: 2.5, 5, 10, 20 ms
}

/** Reads a frame length (RFC 6716 §3.2.1: one byte < 252, else two bytes). Returns [length, bytes used]. */
function opusFrameLength(p: Uint8Array, o: number): [number, number] | undefined {
  if (o >= p.length) return undefined;
  const b0 = p[o]!;
  if (b0 < 252) return [b0, 1];
  if (o + 1 >= p.length) return undefined;
  return [b0 + 4 * p[o + 1]!, 2];
}

/**
 * Checks that `payload` is a well-formed Opus packet (RFC 6716 §3.2, requirements R1–R7: the packet framing
 * libopus itself checks before decoding) holding exactly 20 ms of audio, as protocol v1 requires. Reads the
 * TOC byte and at most the frame-length bytes: cheap enough for every received frame. Returns why not, or
 * undefined. It cannot see a corrupt range-coded body; libopus conceals those like a lost frame.
 */
export function checkOpusPacket(payload: Uint8Array): string | undefined {
  const n = payload.length;
  if (n === 0) return "empty Opus packet";
  if (n > MAX_OPUS_PAYLOAD) return `Opus packet of ${n} bytes exceeds ${MAX_OPUS_PAYLOAD}`;
  const toc = payload[0]!;
  const frameHalfMs = opusFrameHalfMs(toc >> 3);
  let frames: number;
  switch (toc & 3) {
    case 0:
      frames = 1;
      break;
    case 1:
      if ((n - 1) % 2 !== 0) return "Opus code 1 packet with an odd number of frame bytes (R3)";
      frames = 2;
      break;
    case 2: {
      const len = opusFrameLength(payload, 1);
      if (!len || len[0] > n - 1 - len[1]) return "Opus code 2 packet whose first frame is longer than the packet (R4)";
      frames = 2;
      break;
    }
    default: {
      if (n < 2) return "Opus code 3 packet without a frame count byte (R6)";
      const fc = payload[1]!;
      frames = fc & 0x3f;
      if (frames === 0) return "Opus code 3 packet with 0 frames (R5)";
      if (frames * frameHalfMs > 240) return "Opus code 3 packet longer than 120 ms (R5)";
      let o = 2;
      let padding = 0;
      if (fc & 0x40) {
        for (;;) {
          if (o >= n) return "Opus code 3 packet with truncated padding length (R6)";
          const b = payload[o++]!;
          padding += b === 255 ? 254 : b;
          if (b !== 255) break;
        }
      }
      let data = n - o - padding;
      if (data < 0) return "Opus code 3 packet with more padding than bytes (R6/R7)";
      if (fc & 0x80) {
        for (let i = 0; i < frames - 1; i++) {
          const len = opusFrameLength(payload, o);
          if (!len) return "Opus code 3 packet with truncated frame lengths (R7)";
          o += len[1];
          data -= len[1] + len[0];
          if (data < 0) return "Opus code 3 packet whose frame lengths exceed the packet (R7)";
        }
      } else if (data % frames !== 0) return "Opus code 3 CBR packet whose size is not a multiple of its frame count (R6)";
    }
  }
  if (frames * frameHalfMs !== 40) return `Opus packet of ${(frames * frameHalfMs) / 2} ms; protocol v1 carries 20 ms per AUDIO message`;
  return undefined;
}

/** Maps a decode failure to the ERROR code sent back to the peer. */
export function wireErrorCodeFor(reason: WireErrorReason): number {
  switch (reason) {
    case "bad_version":
      return WireErrorCode.UNSUPPORTED_VERSION;
    case "bad_room":
      return WireErrorCode.BAD_ROOM;
    default:
      return WireErrorCode.MALFORMED;
  }
}

// ---------------------------------------------------------------------------------------------------------
// ROSTER (0x09, 1.1.0 with Capability.ROSTER; protocol.md "Roster")

/** Participants a ROSTER snapshot lists at most (the rest only count in `total`). */
export const MAX_ROSTER_LISTED = 256;
export const RosterKind = { SNAPSHOT: 1, SPEAKING: 2 } as const;
/** Flag bits of a roster entry; unknown bits are ignored by clients (servers send them 0). */
export const RosterFlag = { SPEAKING: 0x01 } as const;

export interface RosterEntry {
  participantId: string;
  name: string;
  speaking: boolean;
}

/**
 * One page of a roster snapshot: entries `index … index + entries.length − 1` of the `listed` first
 * participants (join order) of revision `rev`; `total` counts everyone in the room. A snapshot is complete
 * with the page that reaches `listed`.
 */
export interface RosterSnapshotMessage {
  type: "ROSTER";
  kind: "snapshot";
  rev: number;
  total: number;
  listed: number;
  index: number;
  entries: RosterEntry[];
}

/** Speaking flags of revision `rev`'s listed participants, in its order (membership unchanged). */
export interface RosterSpeakingMessage {
  type: "ROSTER";
  kind: "speaking";
  rev: number;
  speaking: boolean[];
}

export type RosterMessage = RosterSnapshotMessage | RosterSpeakingMessage;

const ROSTER_SNAPSHOT_HEADER = 1 + 1 + 4 + 2 + 2 + 2 + 1;

function rosterEntryBytes(e: RosterEntry, field: string): { pid: Uint8Array; name: Uint8Array } {
  if (!PARTICIPANT_ID_RE.test(e.participantId)) invalid(`${field}.participantId`, `"${e.participantId}" is not a valid participant id`);
  const nameErr = checkDisplayName(e.name);
  if (nameErr) invalid(`${field}.name`, nameErr);
  return { pid: utf8.encode(e.participantId), name: utf8.encode(e.name) };
}

function encodeRoster(msg: RosterMessage): Uint8Array {
  checkU32("roster.rev", msg.rev);
  if (msg.kind === "speaking") {
    const listed = msg.speaking.length;
    if (listed > MAX_ROSTER_LISTED) invalid("roster.listed", `${listed} participants, at most ${MAX_ROSTER_LISTED}`);
    const { buf, view } = frameBuffer(1 + 1 + 4 + 2 + Math.ceil(listed / 8));
    let o = LENGTH_PREFIX_BYTES;
    view.setUint8(o++, MessageType.ROSTER);
    view.setUint8(o++, RosterKind.SPEAKING);
    view.setUint32(o, msg.rev);
    o += 4;
    view.setUint16(o, listed);
    o += 2;
    for (let i = 0; i < listed; i++) if (msg.speaking[i]) buf[o + (i >> 3)]! |= 0x80 >> (i & 7);
    return buf;
  }
  if (!Number.isInteger(msg.total) || msg.total < 0 || msg.total > 0xffff) invalid("roster.total", `must be a uint16, got ${msg.total}`);
  if (!Number.isInteger(msg.listed) || msg.listed < 0 || msg.listed > Math.min(msg.total, MAX_ROSTER_LISTED))
    invalid("roster.listed", `must be 0-${Math.min(msg.total, MAX_ROSTER_LISTED)} (total ${msg.total}), got ${msg.listed}`);
  if (!Number.isInteger(msg.index) || msg.index < 0 || msg.index + msg.entries.length > msg.listed || msg.entries.length > 255)
    invalid("roster.index", `entries ${msg.index}..${msg.index + msg.entries.length - 1} outside the ${msg.listed} listed`);
  const parts = msg.entries.map((e, i) => rosterEntryBytes(e, `roster.entries[${i}]`));
  let size = ROSTER_SNAPSHOT_HEADER;
  for (const p of parts) size += 3 + p.pid.length + p.name.length;
  if (size > MAX_MESSAGE_LENGTH)
    invalid("roster.entries", `page of ${size} bytes exceeds ${MAX_MESSAGE_LENGTH}; split it (encodeRosterSnapshot)`);
  const { buf, view } = frameBuffer(size);
  let o = LENGTH_PREFIX_BYTES;
  view.setUint8(o++, MessageType.ROSTER);
  view.setUint8(o++, RosterKind.SNAPSHOT);
  view.setUint32(o, msg.rev);
  o += 4;
  view.setUint16(o, msg.total);
  o += 2;
  view.setUint16(o, msg.listed);
  o += 2;
  view.setUint16(o, msg.index);
  o += 2;
  view.setUint8(o++, parts.length);
  msg.entries.forEach((e, i) => {
    const { pid, name } = parts[i]!;
    view.setUint8(o++, e.speaking ? RosterFlag.SPEAKING : 0);
    view.setUint8(o++, pid.length);
    buf.set(pid, o);
    o += pid.length;
    view.setUint8(o++, name.length);
    buf.set(name, o);
    o += name.length;
  });
  return buf;
}

/**
 * A whole snapshot as ROSTER pages, each as full as MAX_MESSAGE_LENGTH allows (one page up to ~100
 * typical entries; the worst case of 64-byte ids and names is 31 per page). `entries` beyond
 * MAX_ROSTER_LISTED are not sent; `total` says how many there are.
 */
export function encodeRosterSnapshot(rev: number, total: number, entries: readonly RosterEntry[]): Uint8Array[] {
  const listed = Math.min(entries.length, MAX_ROSTER_LISTED);
  const pages: Uint8Array[] = [];
  let index = 0;
  do {
    let size = ROSTER_SNAPSHOT_HEADER;
    let end = index;
    while (end < listed && end - index < 255) {
      const e = entries[end]!;
      const n = 3 + utf8.encode(e.participantId).length + utf8.encode(e.name).length;
      if (size + n > MAX_MESSAGE_LENGTH) break;
      size += n;
      end++;
    }
    pages.push(encodeRoster({ type: "ROSTER", kind: "snapshot", rev, total, listed, index, entries: entries.slice(index, end) }));
    index = end;
  } while (index < listed);
  return pages;
}

function decodeRoster(r: Reader): DecodeResult<WireMessage> {
  const kind = r.u8("kind");
  if (isErr(kind)) return { ok: false, error: kind };
  const rev = r.u32("rev");
  if (isErr(rev)) return { ok: false, error: rev };
  if (kind === RosterKind.SPEAKING) {
    const listed = r.u16("listed");
    if (isErr(listed)) return { ok: false, error: listed };
    if (listed > MAX_ROSTER_LISTED) return fail("bad_field", "roster.listed", `${listed} participants, at most ${MAX_ROSTER_LISTED}`);
    const bits = r.bytes(Math.ceil(listed / 8), "speaking");
    if (isErr(bits)) return { ok: false, error: bits };
    const end = r.end();
    if (end) return { ok: false, error: end };
    const speaking = Array.from({ length: listed }, (_, i) => (bits[i >> 3]! & (0x80 >> (i & 7))) !== 0);
    return { ok: true, value: { type: "ROSTER", kind: "speaking", rev, speaking } };
  }
  if (kind !== RosterKind.SNAPSHOT) return fail("bad_field", "roster.kind", `unknown roster kind ${kind}`);
  const total = r.u16("total");
  if (isErr(total)) return { ok: false, error: total };
  const listed = r.u16("listed");
  if (isErr(listed)) return { ok: false, error: listed };
  if (listed > Math.min(total, MAX_ROSTER_LISTED))
    return fail("bad_field", "roster.listed", `${listed} listed of ${total}, at most ${Math.min(total, MAX_ROSTER_LISTED)}`);
  const index = r.u16("index");
  if (isErr(index)) return { ok: false, error: index };
  const count = r.u8("count");
  if (isErr(count)) return { ok: false, error: count };
  if (index + count > listed)
    return fail("bad_field", "roster.index", `entries ${index}..${index + count - 1} outside the ${listed} listed`);
  const entries: RosterEntry[] = [];
  for (let i = 0; i < count; i++) {
    const flags = r.u8(`entries[${i}].flags`);
    if (isErr(flags)) return { ok: false, error: flags };
    const pidLen = r.u8(`entries[${i}].participantIdLength`);
    if (isErr(pidLen)) return { ok: false, error: pidLen };
    const pidBytes = r.bytes(pidLen, `entries[${i}].participantId`);
    if (isErr(pidBytes)) return { ok: false, error: pidBytes };
    const participantId = ascii.decode(pidBytes);
    if (!PARTICIPANT_ID_RE.test(participantId))
      return fail("bad_field", `roster.entries[${i}].participantId`, `"${participantId.slice(0, 80)}" is not a valid participant id`);
    const nameLen = r.u8(`entries[${i}].nameLength`);
    if (isErr(nameLen)) return { ok: false, error: nameLen };
    if (nameLen > MAX_NAME_BYTES)
      return fail("bad_field", `roster.entries[${i}].name`, `display name of ${nameLen} bytes exceeds ${MAX_NAME_BYTES}`);
    const nameBytes = r.bytes(nameLen, `entries[${i}].name`);
    if (isErr(nameBytes)) return { ok: false, error: nameBytes };
    const name = decodeUtf8(nameBytes);
    if (name === undefined) return fail("bad_field", `roster.entries[${i}].name`, "display name is not valid UTF-8");
    const nameErr = checkDisplayName(name);
    if (nameErr) return fail("bad_field", `roster.entries[${i}].name`, nameErr);
    entries.push({ participantId, name, speaking: (flags & RosterFlag.SPEAKING) !== 0 });
  }
  const end = r.end();
  if (end) return { ok: false, error: end };
  return { ok: true, value: { type: "ROSTER", kind: "snapshot", rev, total, listed, index, entries } };
}
