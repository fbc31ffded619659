/**
 * Loads the effective configuration: schema defaults < TOML file < environment (AGORA_<SECTION>_<KEY>) <
 * CLI overrides. Every problem is collected and reported at once with its source (file:line, env var, flag)
 * and key path; unknown keys are warnings with a typo hint, never silently ignored.
 */
import { readFileSync, statSync } from "node:fs";
import { isIP } from "node:net";
import { basename, isAbsolute, join, resolve } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { AgoraError, ConfigError, type ConfigIssue } from "../errors";
import { type AgoraConfig, type ConfigValue, defaultConfig, type KeySpec, SCHEMA, SECTIONS, type SectionName, specFor } from "./schema";

export interface LoadOptions {
  /** TOML file; none means the embedded defaults. */
  file?: string;
  /** Environment to read AGORA_* overrides from (process.env by default; tests pass their own). */
  env?: Record<string, string | undefined>;
  /** Overrides from CLI flags, by key path, as text (validated like env values). */
  overrides?: { path: string; value: string; source: string }[];
}

export interface LoadedConfig {
  config: AgoraConfig;
  warnings: ConfigIssue[];
  /** Where each non-default value came from, by key path (for `config show`). */
  origins: Record<string, string>;
  file?: string;
}

/** Environment variables that are not config keys but belong to agora-node. */
const RESERVED_ENV = new Set(["AGORA_CONFIG", "AGORA_TEST_HOOKS"]);

export function envName(path: string): string {
  return `AGORA_${path.replace(/\./g, "_").toUpperCase()}`;
}

/** Levenshtein distance, bounded use: short key names only. */
function distance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      dp[i]![j] = Math.min(dp[i - 1]![j]! + 1, dp[i]![j - 1]! + 1, dp[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return dp[a.length]![b.length]!;
}

/** The known name closest to `candidate` by edit distance, when it is close enough to be a typo. */
export function closestName(candidate: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(candidate, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(candidate.length / 4)) ? best : undefined;
}

function hint(candidate: string, known: readonly string[]): string {
  const best = closestName(candidate, known);
  return best !== undefined ? ` (did you mean "${best}"?)` : "";
}

const ALL_PATHS = SCHEMA.map((s) => `${s.section}.${s.key}`);

/**
 * Line numbers of keys in a TOML text, by dotted path. smol-toml (like every maintained JS TOML parser we
 * checked) gives positions only for syntax errors, not for values, so this small scanner finds the line of
 * each `key =` under its `[table]` header to name it in messages. It only needs to be right for the simple
 * table/key shapes a node config uses; anything it misses falls back to naming the file without a line.
 */
export function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  let table = "";
  const rows = text.split(/\r?\n/);
  for (let i = 0; i < rows.length; i++) {
    const raw = rows[i]!.trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const header = /^\[\s*([A-Za-z0-9_.\-"' ]+?)\s*\]/.exec(raw);
    if (header && !raw.startsWith("[[")) {
      table = header[1]!.replace(/["'\s]/g, "");
      if (!lines.has(table)) lines.set(table, i + 1);
      continue;
    }
    const kv = /^([A-Za-z0-9_.\-"' ]+?)\s*=/.exec(raw);
    if (kv) {
      const key = kv[1]!.replace(/["'\s]/g, "");
      const path = table ? `${table}.${key}` : key;
      if (!lines.has(path)) lines.set(path, i + 1);
    }
  }
  return lines;
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return "array";
  if (v instanceof Date) return "date";
  if (v === null) return "null";
  // TOML tables come back as null-prototype objects: never String() them (that throws).
  if (typeof v === "object") return "table";
  return typeof v;
}

function shown(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  if (Array.isArray(v)) return `array of ${v.length}`;
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  if (v instanceof Date) return `date ${Number.isNaN(v.getTime()) ? "(invalid)" : v.toISOString()}`;
  return typeName(v);
}

const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/;

/** Validates one value against its spec. Returns the normalized value or an "expected …, got …" message. */
export type ValidationResult = { ok: true; value: ConfigValue } | { ok: false; message: string; messages?: string[] };

export function validateValue(spec: KeySpec, value: unknown): ValidationResult {
  const t = spec.type;
  const fail = (expected: string) => ({ ok: false as const, message: `expected ${expected}, got ${shown(value)}` });
  switch (t.kind) {
    case "string": {
      if (typeof value !== "string") return fail(`a string${t.patternDesc ? ` (${t.patternDesc})` : ""}`);
      if (value.includes("\0")) return fail("a string without NUL bytes");
      if (t.maxLength !== undefined && value.length > t.maxLength) return fail(`at most ${t.maxLength} characters`);
      if (t.pattern && !t.pattern.test(value)) return fail(t.patternDesc ?? `a string matching ${t.pattern}`);
      return { ok: true, value };
    }
    case "address": {
      if (typeof value !== "string" || isIP(value) === 0) return fail("an IP address like 0.0.0.0, 127.0.0.1 or ::");
      return { ok: true, value };
    }
    case "integer": {
      if (typeof value !== "number" || !Number.isInteger(value) || value < t.min || value > t.max)
        return fail(`integer ${t.min}..${t.max}`);
      return { ok: true, value };
    }
    case "boolean": {
      if (typeof value !== "boolean") return fail("true or false");
      return { ok: true, value };
    }
    case "enum": {
      if (typeof value !== "string" || !t.values.includes(value)) return fail(`one of ${t.values.join(" | ")}`);
      return { ok: true, value };
    }
    case "duration": {
      const range = `${t.min}..${t.max} ${t.unit === "s" ? "seconds" : "milliseconds"}`;
      let seconds: number | undefined;
      if (typeof value === "number" && Number.isFinite(value)) seconds = t.unit === "s" ? value : value / 1000;
      else if (typeof value === "string") {
        const m = DURATION.exec(value);
        if (m) {
          const n = Number(m[1]);
          const unit = m[2] ?? t.unit;
          seconds = unit === "ms" ? n / 1000 : unit === "m" ? n * 60 : unit === "h" ? n * 3600 : n;
        }
      }
      if (seconds === undefined) return fail(`a duration (${range}, or a string like "30s", "500ms", "2m")`);
      const inUnit = t.unit === "s" ? seconds : seconds * 1000;
      if (inUnit < t.min || inUnit > t.max) return fail(`a duration of ${range}`);
      return { ok: true, value: inUnit };
    }
    case "list": {
      if (!Array.isArray(value)) return fail(`an array of strings (${t.item.patternDesc})`);
      if (value.length > t.maxItems) return fail(`at most ${t.maxItems} entries`);
      const out: string[] = [];
      // Every bad entry is reported, each with its index, so a list is fixed in one pass.
      const problems: string[] = [];
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        if (typeof item !== "string") {
          problems.push(`entry ${i + 1}: expected a string (${t.item.patternDesc}), got ${typeName(item)}`);
          continue;
        }
        if (t.item.pattern && !t.item.pattern.test(item)) {
          problems.push(`entry ${i + 1}: expected ${t.item.patternDesc}, got ${shown(item)}`);
          continue;
        }
        const problem = t.item.check?.(item);
        if (problem) problems.push(`entry ${i + 1}: ${problem}`);
        else out.push(item);
      }
      if (problems.length > 0) return { ok: false, message: problems.join("; "), messages: problems };
      return { ok: true, value: out };
    }
  }
}

/** One issue per problem of a failed validation (a list reports each bad entry on its own). */
function failures(r: { message: string; messages?: string[] }): string[] {
  return r.messages ?? [r.message];
}

/** Parses an environment or flag value (text) into the value type the spec wants, then validates it. */
export function parseTextValue(spec: KeySpec, text: string): ValidationResult {
  const t = spec.type;
  let value: unknown = text;
  if (t.kind === "integer") {
    const trimmed = text.trim();
    value = /^[+-]?\d+$/.test(trimmed) ? Number(trimmed) : text;
  } else if (t.kind === "boolean") {
    const v = text.trim().toLowerCase();
    value = ["true", "1", "yes", "on"].includes(v) ? true : ["false", "0", "no", "off"].includes(v) ? false : text;
  } else if (t.kind === "list") {
    const trimmed = text.trim();
    if (trimmed.startsWith("[")) {
      try {
        value = JSON.parse(trimmed);
      } catch {
        return { ok: false, message: `expected a JSON array or a comma-separated list, got ${shown(text)}` };
      }
    } else
      value =
        trimmed === ""
          ? []
          : trimmed
              .split(",")
              .map((s) => s.trim())
              .filter((s) => s !== "");
  } else if (t.kind === "duration") {
    value = text;
  }
  return validateValue(spec, value);
}

function setValue(cfg: AgoraConfig, spec: KeySpec, value: ConfigValue): void {
  (cfg[spec.section] as unknown as Record<string, ConfigValue>)[spec.key] = value;
}

function readConfigFile(file: string): string {
  try {
    const st = statSync(file);
    if (st.isDirectory()) throw new AgoraError("CONFIG_IO", "is a directory, expected a TOML file", { where: file });
    if (st.size > 1024 * 1024) throw new AgoraError("CONFIG_IO", `is ${st.size} bytes; a config file is at most 1 MiB`, { where: file });
    return readFileSync(file, "utf8");
  } catch (err) {
    if (err instanceof AgoraError) throw err;
    const e = err as NodeJS.ErrnoException;
    const uid = typeof process.getuid === "function" ? process.getuid() : undefined;
    const why =
      e.code === "ENOENT"
        ? "no such file"
        : e.code === "EACCES"
          ? `permission denied: the node runs as uid ${uid} and must be able to read it (chmod 644 ${file}; keep secrets in dashboard.auth_token_file or a root-only EnvironmentFile=, not in the config)`
          : e.message;
    throw new AgoraError("CONFIG_IO", `cannot read config: ${why}`, { where: file, cause: err });
  }
}

/** Applies a parsed TOML document; collects errors and warnings with file:line sources. */
function applyDocument(
  cfg: AgoraConfig,
  doc: Record<string, unknown>,
  text: string,
  fileLabel: string,
  errors: ConfigIssue[],
  warnings: ConfigIssue[],
  origins: Record<string, string>,
): void {
  const lines = keyLines(text);
  const at = (path: string) => {
    const line = lines.get(path);
    return line ? `${fileLabel}:${line}` : fileLabel;
  };
  for (const [section, body] of Object.entries(doc)) {
    if (!SECTIONS.includes(section as SectionName)) {
      warnings.push({ source: at(section), path: section, message: `unknown section, ignored${hint(section, SECTIONS)}` });
      continue;
    }
    if (typeof body !== "object" || body === null || Array.isArray(body) || body instanceof Date) {
      errors.push({ source: at(section), path: section, message: `expected a table [${section}], got ${typeName(body)}` });
      continue;
    }
    for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
      const path = `${section}.${key}`;
      const spec = specFor(path);
      if (!spec) {
        const inSection = SCHEMA.filter((s) => s.section === section).map((s) => s.key);
        warnings.push({ source: at(path), path, message: `unknown key, ignored${hint(key, inSection)}` });
        continue;
      }
      const r = validateValue(spec, value);
      if (r.ok) {
        setValue(cfg, spec, r.value);
        origins[path] = at(path);
      } else for (const message of failures(r)) errors.push({ source: at(path), path, message });
    }
  }
}

/** Keys whose value must not sit in a file other users can read. */
const SECRET_PATHS = SCHEMA.filter((s) => s.secret).map((s) => `${s.section}.${s.key}`);

/** A config readable by every user (as the service needs it) must not carry secrets inline. */
function warnReadableSecrets(
  cfg: AgoraConfig,
  file: string,
  label: string,
  origins: Record<string, string>,
  warnings: ConfigIssue[],
): void {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return;
  }
  if ((mode & 0o004) === 0) return;
  for (const path of SECRET_PATHS) {
    const from = origins[path];
    const [section, key] = path.split(".") as [SectionName, string];
    if (!from?.startsWith(label) || !(cfg[section] as unknown as Record<string, unknown>)[key]) continue;
    warnings.push({
      source: from,
      path,
      message: `a secret in a file every user can read (mode ${(mode & 0o777).toString(8)}): put it in ${path === "dashboard.auth_token" ? "dashboard.auth_token_file (mode 0600) or " : ""}${envName(path)} from a root-only EnvironmentFile=`,
    });
  }
}

function isLoopback(addr: string): boolean {
  return addr === "::1" || /^127\./.test(addr);
}

/** Rules between keys, and resolving derived paths (pid file, key file, token file). */
function crossCheck(cfg: AgoraConfig, errors: ConfigIssue[], warnings: ConfigIssue[], origins: Record<string, string>): void {
  const where = (path: string) => origins[path] ?? "config";
  const n = cfg.node;
  if (!isAbsolute(n.data_dir)) n.data_dir = resolve(n.data_dir);
  if (n.pid_file === "") n.pid_file = join(n.data_dir, "agora-node.pid");
  if (cfg.identity.key_file === "") cfg.identity.key_file = join(n.data_dir, "identity.key");
  for (const p of ["node.pid_file", "identity.key_file", "logging.file", "dashboard.auth_token_file"] as const) {
    const [s, k] = p.split(".") as [SectionName, string];
    const sec = cfg[s] as unknown as Record<string, string>;
    if (sec[k] && !isAbsolute(sec[k]!)) sec[k] = resolve(sec[k]!);
  }
  if (cfg.audio.jitter_min_ms > cfg.audio.jitter_max_ms)
    errors.push({
      source: where("audio.jitter_min_ms"),
      path: "audio.jitter_min_ms",
      message: `must not exceed audio.jitter_max_ms (${cfg.audio.jitter_max_ms})`,
    });
  const d = cfg.dashboard;
  const m = cfg.metrics;
  if (d.enabled && m.enabled && d.port === m.port)
    errors.push({
      source: where("metrics.port"),
      path: "metrics.port",
      message: `conflicts with dashboard.port (${d.port}); give them different ports`,
    });
  for (const [name, on, port] of [
    ["dashboard.port", d.enabled, d.port],
    ["metrics.port", m.enabled, m.port],
  ] as const)
    if (on && port === n.listen_port)
      errors.push({ source: where("node.listen_port"), path: "node.listen_port", message: `conflicts with ${name} (${port})` });
  // The node's UDP socket (STUN) already holds node.listen_port on node.listen_addr: the voice datagrams
  // share it (udp_port 0, or the same port and address) or need a port of their own.
  const a = cfg.audio;
  if (a.udp_enabled && a.udp_port === n.listen_port && a.udp_listen_addr !== n.listen_addr)
    errors.push({
      source: where("audio.udp_port"),
      path: "audio.udp_port",
      message: `equals node.listen_port (${n.listen_port}), whose UDP socket binds node.listen_addr ${n.listen_addr}; set audio.udp_port = 0 to share that socket, or another port`,
    });
  const net = cfg.network;
  if (net.ws_port !== 0) {
    for (const [name, on, port] of [
      ["node.listen_port", true, n.listen_port],
      ["dashboard.port", d.enabled, d.port],
      ["metrics.port", m.enabled, m.port],
    ] as const)
      if (on && port === net.ws_port)
        errors.push({ source: where("network.ws_port"), path: "network.ws_port", message: `conflicts with ${name} (${port})` });
    if (!isLoopback(net.ws_listen_addr) && !net.ws_allow_insecure_public) {
      errors.push({
        source: where("network.ws_listen_addr"),
        path: "network.ws_listen_addr",
        message: `plain ws on ${net.ws_listen_addr} is not loopback: bind 127.0.0.1 behind a TLS reverse proxy (README), or set network.ws_allow_insecure_public = true`,
      });
    }
  }
  if (d.auth_token && d.auth_token_file)
    errors.push({
      source: where("dashboard.auth_token_file"),
      path: "dashboard.auth_token_file",
      message: "set either dashboard.auth_token or dashboard.auth_token_file, not both",
    });
  else if (d.auth_token_file) {
    try {
      const token = readFileSync(d.auth_token_file, "utf8").trim();
      if (token === "")
        errors.push({
          source: where("dashboard.auth_token_file"),
          path: "dashboard.auth_token_file",
          message: `${d.auth_token_file} is empty`,
        });
      else d.auth_token = token;
    } catch (err) {
      errors.push({
        source: where("dashboard.auth_token_file"),
        path: "dashboard.auth_token_file",
        message: `cannot read ${d.auth_token_file}: ${(err as Error).message}`,
      });
    }
  }
  if (d.auth_token && d.auth_token.length < 16)
    errors.push({
      source: where(d.auth_token_file ? "dashboard.auth_token_file" : "dashboard.auth_token"),
      path: "dashboard.auth_token",
      message: `expected at least 16 characters, got ${d.auth_token.length}`,
    });
  if (d.enabled && !isLoopback(d.listen_addr) && !d.auth_token)
    errors.push({
      source: where("dashboard.listen_addr"),
      path: "dashboard.listen_addr",
      message: `binding the dashboard to ${d.listen_addr} (not loopback) requires an admin token: set dashboard.auth_token_file (or dashboard.auth_token, AGORA_DASHBOARD_AUTH_TOKEN)`,
    });
  if (cfg.turn.enabled && cfg.turn.url === "")
    errors.push({ source: where("turn.enabled"), path: "turn.url", message: "turn.enabled is true but turn.url is empty" });
  if (cfg.turn.enabled && cfg.turn.url && (cfg.turn.username === "") !== (cfg.turn.password === ""))
    warnings.push({ source: where("turn.url"), path: "turn.username", message: "TURN username and password should be set together" });
  if (n.mode === "bootstrap" && n.max_mixers > 0 && origins["node.max_mixers"])
    warnings.push({ source: where("node.max_mixers"), path: "node.max_mixers", message: "ignored in bootstrap mode (no mixer runs)" });
}

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const cfg = defaultConfig();
  const errors: ConfigIssue[] = [];
  const warnings: ConfigIssue[] = [];
  const origins: Record<string, string> = {};
  const env = opts.env ?? process.env;

  if (opts.file) {
    const text = readConfigFile(opts.file);
    const label = basename(opts.file);
    let doc: Record<string, unknown> | undefined;
    try {
      doc = parseToml(text) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof TomlError) {
        const firstLine = err.message.split("\n")[0] ?? err.message;
        errors.push({
          source: `${label}:${err.line}:${err.column}`,
          path: "",
          message: `TOML syntax error: ${firstLine.replace(/^Invalid TOML document: /, "")}`,
        });
      } else errors.push({ source: label, path: "", message: `TOML syntax error: ${(err as Error).message}` });
    }
    if (doc) applyDocument(cfg, doc, text, label, errors, warnings, origins);
    warnReadableSecrets(cfg, opts.file, label, origins, warnings);
  }

  for (const [name, text] of Object.entries(env)) {
    if (!name.startsWith("AGORA_") || text === undefined || RESERVED_ENV.has(name)) continue;
    const spec = SCHEMA.find((s) => envName(`${s.section}.${s.key}`) === name);
    if (!spec) {
      warnings.push({ source: `env ${name}`, path: "", message: `not a config variable, ignored${hint(name, ALL_PATHS.map(envName))}` });
      continue;
    }
    const r = parseTextValue(spec, text);
    const path = `${spec.section}.${spec.key}`;
    if (r.ok) {
      setValue(cfg, spec, r.value);
      origins[path] = `env ${name}`;
    } else for (const message of failures(r)) errors.push({ source: `env ${name}`, path, message });
  }

  for (const o of opts.overrides ?? []) {
    const spec = specFor(o.path);
    if (!spec) {
      errors.push({ source: o.source, path: o.path, message: `unknown key${hint(o.path, ALL_PATHS)}` });
      continue;
    }
    const r = parseTextValue(spec, o.value);
    if (r.ok) {
      setValue(cfg, spec, r.value);
      origins[o.path] = o.source;
    } else for (const message of failures(r)) errors.push({ source: o.source, path: o.path, message });
  }

  if (errors.length === 0) crossCheck(cfg, errors, warnings, origins);
  if (errors.length > 0) throw new ConfigError(errors, warnings);
  return { config: cfg, warnings, origins, file: opts.file };
}

/** Paths whose change needs a restart to take effect (all non-live keys). */
export function restartRequiredChanges(before: AgoraConfig, after: AgoraConfig): { live: string[]; restart: string[] } {
  const live: string[] = [];
  const restart: string[] = [];
  for (const spec of SCHEMA) {
    const a = (before[spec.section] as unknown as Record<string, unknown>)[spec.key];
    const b = (after[spec.section] as unknown as Record<string, unknown>)[spec.key];
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    (spec.live ? live : restart).push(`${spec.section}.${spec.key}`);
  }
  return { live, restart };
}
