/**
 * Renders TOML from the schema: the fully commented default config (`config init`, config/node.toml) and the
 * effective config with secrets masked (`config show`, /api/status).
 */
import { stringify } from "smol-toml";
import { envName } from "./load";
import { type AgoraConfig, type ConfigValue, defaultValue, SCHEMA, SECTION_DOCS, SECTIONS } from "./schema";

function tomlValue(v: ConfigValue): string {
  // smol-toml renders one key at a time exactly as it would inside a document.
  return stringify({ v }).replace(/^v = /, "").trim();
}

function describeType(spec: (typeof SCHEMA)[number]): string {
  const t = spec.type;
  switch (t.kind) {
    case "integer":
      return `integer ${t.min}..${t.max}`;
    case "enum":
      return t.values.join(" | ");
    case "boolean":
      return "true | false";
    case "duration":
      return `duration, ${t.unit === "s" ? "seconds" : "ms"} or "30s"/"500ms"/"2m"`;
    case "list":
      return `list of ${t.item.patternDesc}`;
    case "address":
      return "IP address";
    case "string":
      return t.patternDesc ?? "string";
  }
}

/** The commented default configuration. Machine-dependent defaults (data_dir, name) are shown as comments. */
export function renderDefaultConfig(): string {
  const out: string[] = [
    "# agora-node configuration. Every key is optional: what is left out takes the default shown here.",
    "# Each key can also be set from the environment as AGORA_<SECTION>_<KEY>, e.g. AGORA_NODE_LISTEN_PORT=7001.",
    "# Keys marked [live] change on SIGHUP (systemctl reload); the others need a restart.",
    "",
  ];
  for (const section of SECTIONS) {
    out.push(`# ${SECTION_DOCS[section]}`, `[${section}]`);
    for (const spec of SCHEMA.filter((s) => s.section === section)) {
      out.push(`# ${spec.doc}`);
      out.push(`# (${describeType(spec)}${spec.live ? "; [live]" : ""}; env ${envName(`${spec.section}.${spec.key}`)})`);
      // Machine-dependent defaults are not written out, so the file is the same on every machine.
      if (typeof spec.default === "function")
        out.push(`# ${spec.key} = ${spec.example ?? '""'}   # default: computed when the node starts`);
      else if (spec.example) out.push(`${spec.key} = ${tomlValue(defaultValue(spec))}`, `# ${spec.key} = ${spec.example}`);
      else out.push(`${spec.key} = ${tomlValue(defaultValue(spec))}`);
    }
    out.push("");
  }
  return out.join("\n");
}

export const MASK = "********";

/** A deep copy of the config with every secret replaced by a mask (empty secrets stay empty). */
export function maskSecrets(cfg: AgoraConfig): AgoraConfig {
  const copy = structuredClone(cfg);
  for (const spec of SCHEMA) {
    if (!spec.secret) continue;
    const sec = copy[spec.section] as unknown as Record<string, unknown>;
    if (sec[spec.key]) sec[spec.key] = MASK;
  }
  return copy;
}

export function renderEffectiveConfig(cfg: AgoraConfig, origins: Record<string, string>): string {
  const masked = maskSecrets(cfg);
  const out: string[] = ["# effective configuration (secrets masked); the comment says where a value came from"];
  for (const section of SECTIONS) {
    out.push(`[${section}]`);
    for (const spec of SCHEMA.filter((s) => s.section === section)) {
      const v = (masked[section] as unknown as Record<string, ConfigValue>)[spec.key]!;
      const origin = origins[`${section}.${spec.key}`];
      out.push(`${spec.key} = ${tomlValue(v)}${origin ? `   # ${origin}` : ""}`);
    }
    out.push("");
  }
  return out.join("\n");
}
