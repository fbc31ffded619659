/**
 * STUN (RFC 5389) messages, as far as a client learning its public address needs them: the Binding request
 * (with FINGERPRINT) and its success and error responses with XOR-MAPPED-ADDRESS (MAPPED-ADDRESS as the
 * fallback for RFC 3489 servers), ERROR-CODE and FINGERPRINT. Layout, all big-endian:
 *
 *   header   type u16 | length u16 (bytes after the header) | magic cookie 0x2112A442 | transaction id 12 B
 *   attr     type u16 | length u16 | value, padded with zeros to a multiple of 4
 *   XOR-MAPPED-ADDRESS 0x0020   0x00 | family (1 IPv4, 2 IPv6) | port ^ 0x2112 | address ^ (cookie ‖ txid)
 *   MAPPED-ADDRESS     0x0001   0x00 | family | port | address
 *   ERROR-CODE         0x0009   0x0000 | class (hundreds) u8 | number u8 | reason UTF-8
 *   FINGERPRINT        0x8028   CRC-32 (IEEE) of the message before it, length field already counting it,
 *                               xor 0x5354554E; always the last attribute
 *
 * Hand-written rather than the npm `stun` package (2.1.0): that package pulls `ip@1` and `parse-url@5`, both
 * with published security advisories, plus a CLI stack, for a format this small; it also hides the
 * per-datagram verdicts (bad fingerprint, unknown transaction) this node must count. Test vectors: RFC 5769.
 */

export const MAGIC_COOKIE = 0x2112a442;
export const FINGERPRINT_XOR = 0x5354554e;
export const HEADER_BYTES = 20;

export const BINDING_REQUEST = 0x0001;
export const BINDING_SUCCESS = 0x0101;
export const BINDING_ERROR = 0x0111;

export const ATTR_MAPPED_ADDRESS = 0x0001;
export const ATTR_ERROR_CODE = 0x0009;
export const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
export const ATTR_SOFTWARE = 0x8022;
export const ATTR_FINGERPRINT = 0x8028;

/** Why a datagram that claimed to be a STUN response was not taken. */
export type StunRejectReason = "malformed" | "fingerprint" | "transaction" | "not_a_response" | "no_address";

export class StunDecodeError extends Error {
  constructor(
    readonly reason: StunRejectReason,
    message: string,
  ) {
    super(message);
    this.name = "StunDecodeError";
  }
}

export interface MappedAddress {
  family: "IPv4" | "IPv6";
  address: string;
  port: number;
}

export type StunResponse =
  | { kind: "success"; transactionId: Uint8Array; mapped: MappedAddress; via: "xor-mapped" | "mapped"; fingerprint: boolean }
  | { kind: "error"; transactionId: Uint8Array; code: number; reason: string; fingerprint: boolean };

export function crc32(data: Uint8Array): number {
  return Bun.hash.crc32(data) >>> 0;
}

/** First cheap test (RFC 5389 §6/§7.3): top two bits zero, the magic cookie in place, a length multiple of 4. */
export function looksLikeStun(data: Uint8Array): boolean {
  if (data.byteLength < HEADER_BYTES || (data[0]! & 0xc0) !== 0) return false;
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return v.getUint32(4) === MAGIC_COOKIE && (v.getUint16(2) & 3) === 0;
}

export function randomTransactionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(12));
}

/** A Binding request with no attribute but FINGERPRINT (28 bytes). */
export function encodeBindingRequest(transactionId: Uint8Array): Uint8Array {
  if (transactionId.byteLength !== 12) throw new RangeError("a STUN transaction id is 12 bytes");
  const out = new Uint8Array(HEADER_BYTES + 8);
  const v = new DataView(out.buffer);
  v.setUint16(0, BINDING_REQUEST);
  v.setUint16(2, 8);
  v.setUint32(4, MAGIC_COOKIE);
  out.set(transactionId, 8);
  v.setUint16(20, ATTR_FINGERPRINT);
  v.setUint16(22, 4);
  v.setUint32(24, (crc32(out.subarray(0, 20)) ^ FINGERPRINT_XOR) >>> 0);
  return out;
}

function ipv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

function ipv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return groups.join(":");
  return `${groups.slice(0, bestStart).join(":")}::${groups.slice(bestStart + bestLen).join(":")}`;
}

function decodeAddress(value: Uint8Array, xorWith: Uint8Array | undefined, name: string): MappedAddress {
  if (value.byteLength < 4) throw new StunDecodeError("malformed", `${name} is ${value.byteLength} bytes, expected 8 or 20`);
  const family = value[1];
  const len = family === 1 ? 4 : family === 2 ? 16 : 0;
  if (len === 0) throw new StunDecodeError("malformed", `${name} has address family ${family}, expected 1 (IPv4) or 2 (IPv6)`);
  if (value.byteLength !== 4 + len) throw new StunDecodeError("malformed", `${name} is ${value.byteLength} bytes, expected ${4 + len}`);
  let port = (value[2]! << 8) | value[3]!;
  const addr = value.slice(4, 4 + len);
  if (xorWith) {
    port ^= MAGIC_COOKIE >>> 16;
    for (let i = 0; i < len; i++) addr[i]! ^= xorWith[i]!;
  }
  return { family: family === 1 ? "IPv4" : "IPv6", address: len === 4 ? ipv4(addr) : ipv6(addr), port };
}

/**
 * Decodes a Binding response. Throws StunDecodeError with the reason to count: `malformed` (framing, lengths,
 * attributes after FINGERPRINT), `fingerprint` (present but wrong), `not_a_response` (a request, an
 * indication, another method), `no_address` (a success without a mapped address). Unknown attributes are
 * skipped: servers add their own (SOFTWARE, RESPONSE-ORIGIN, RFC 3489's SOURCE-ADDRESS …).
 */
export function decodeResponse(data: Uint8Array): StunResponse {
  if (!looksLikeStun(data)) throw new StunDecodeError("malformed", "not a STUN message (no magic cookie)");
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const type = v.getUint16(0);
  const length = v.getUint16(2);
  if (HEADER_BYTES + length !== data.byteLength)
    throw new StunDecodeError("malformed", `header says ${length} attribute bytes, datagram has ${data.byteLength - HEADER_BYTES}`);
  if (type !== BINDING_SUCCESS && type !== BINDING_ERROR)
    throw new StunDecodeError("not_a_response", `message type 0x${type.toString(16).padStart(4, "0")} is not a Binding response`);
  const transactionId = data.slice(8, 20);
  const xorKey = data.slice(4, 20); // cookie ‖ transaction id
  let xorMapped: MappedAddress | undefined;
  let mapped: MappedAddress | undefined;
  let error: { code: number; reason: string } | undefined;
  let fingerprint = false;
  let off = HEADER_BYTES;
  while (off < data.byteLength) {
    if (fingerprint) throw new StunDecodeError("malformed", "attribute after FINGERPRINT");
    if (off + 4 > data.byteLength) throw new StunDecodeError("malformed", `truncated attribute header at byte ${off}`);
    const at = v.getUint16(off);
    const alen = v.getUint16(off + 2);
    const start = off + 4;
    const end = start + alen;
    if (end > data.byteLength) throw new StunDecodeError("malformed", `attribute 0x${at.toString(16)} at byte ${off} runs past the end`);
    const value = data.subarray(start, end);
    switch (at) {
      case ATTR_XOR_MAPPED_ADDRESS:
        xorMapped ??= decodeAddress(value, xorKey, "XOR-MAPPED-ADDRESS");
        break;
      case ATTR_MAPPED_ADDRESS:
        mapped ??= decodeAddress(value, undefined, "MAPPED-ADDRESS");
        break;
      case ATTR_ERROR_CODE: {
        if (alen < 4) throw new StunDecodeError("malformed", `ERROR-CODE is ${alen} bytes, expected at least 4`);
        const code = (value[2]! & 7) * 100 + value[3]!;
        error ??= { code, reason: new TextDecoder("utf-8", { fatal: false }).decode(value.subarray(4)).slice(0, 128) };
        break;
      }
      case ATTR_FINGERPRINT: {
        if (alen !== 4) throw new StunDecodeError("malformed", `FINGERPRINT is ${alen} bytes, expected 4`);
        const want = (crc32(data.subarray(0, off)) ^ FINGERPRINT_XOR) >>> 0;
        if (v.getUint32(start) !== want) throw new StunDecodeError("fingerprint", "FINGERPRINT does not match the message");
        fingerprint = true;
        break;
      }
    }
    off = start + ((alen + 3) & ~3);
  }
  if (off !== data.byteLength) throw new StunDecodeError("malformed", "attribute padding runs past the end");
  if (type === BINDING_ERROR) {
    if (!error) throw new StunDecodeError("malformed", "error response without ERROR-CODE");
    return { kind: "error", transactionId, ...error, fingerprint };
  }
  const best = xorMapped ?? mapped;
  if (!best) throw new StunDecodeError("no_address", "success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS");
  return { kind: "success", transactionId, mapped: best, via: xorMapped ? "xor-mapped" : "mapped", fingerprint };
}

/** Encodes a Binding success response (for test servers and test vectors): XOR-MAPPED-ADDRESS, FINGERPRINT. */
export function encodeBindingSuccess(
  transactionId: Uint8Array,
  mapped: MappedAddress,
  opts: { fingerprint?: boolean; plainMapped?: boolean } = {},
): Uint8Array {
  const v6 = mapped.family === "IPv6";
  const addrBytes = v6 ? ipv6Bytes(mapped.address) : Uint8Array.from(mapped.address.split(".").map(Number));
  const alen = 4 + addrBytes.byteLength;
  const fp = opts.fingerprint !== false;
  const out = new Uint8Array(HEADER_BYTES + 4 + alen + (fp ? 8 : 0));
  const v = new DataView(out.buffer);
  v.setUint16(0, BINDING_SUCCESS);
  v.setUint16(2, out.byteLength - HEADER_BYTES);
  v.setUint32(4, MAGIC_COOKIE);
  out.set(transactionId, 8);
  v.setUint16(20, opts.plainMapped ? ATTR_MAPPED_ADDRESS : ATTR_XOR_MAPPED_ADDRESS);
  v.setUint16(22, alen);
  out[25] = v6 ? 2 : 1;
  const key = out.slice(4, 20);
  v.setUint16(26, opts.plainMapped ? mapped.port : mapped.port ^ (MAGIC_COOKIE >>> 16));
  for (let i = 0; i < addrBytes.byteLength; i++) out[28 + i] = opts.plainMapped ? addrBytes[i]! : addrBytes[i]! ^ key[i]!;
  if (fp) {
    const at = 24 + alen;
    v.setUint16(at, ATTR_FINGERPRINT);
    v.setUint16(at + 2, 4);
    v.setUint32(at + 4, (crc32(out.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0);
  }
  return out;
}

function ipv6Bytes(text: string): Uint8Array {
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = Number.parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}
