/**
 * Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for the values Agora signs: object keys sorted by
 * UTF-16 code units, no whitespace, numbers and strings serialized as ECMAScript's JSON.stringify does.
 * JCS is what a non-JavaScript implementation (a Rust or Go client) can reproduce byte for byte, which a
 * signature over "whatever JSON.stringify happened to emit" would not guarantee (key order follows insertion).
 */
import { AgoraError } from "../errors";

export function canonicalJson(value: unknown): string {
  return serialize(value, 0);
}

function serialize(value: unknown, depth: number): string {
  // Records are shallow; the bound only guards against a hostile deeply nested value blowing the stack.
  if (depth > 16) throw new AgoraError("RECORD_INVALID", "value nests too deeply to canonicalize");
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new AgoraError("RECORD_INVALID", "non-finite number cannot be canonicalized");
      // -0 serializes as 0 in JCS, as JSON.stringify already does.
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map((v) => serialize(v, depth + 1)).join(",")}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort(compareUtf16);
      return `{${keys.map((k) => `${JSON.stringify(k)}:${serialize(obj[k], depth + 1)}`).join(",")}}`;
    }
    default:
      throw new AgoraError("RECORD_INVALID", `a ${typeof value} cannot be canonicalized`);
  }
}

/** Plain code-unit comparison (what Array.prototype.sort does by default), spelled out so intent is explicit. */
function compareUtf16(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
