/**
 * What every subcommand shares: its I/O (injectable for tests) and how it loads the config it names. A leaf
 * of the CLI, so subcommand files import it instead of the CLI's entry (which imports them).
 */
import { type LoadedConfig, loadConfig } from "../config";
import { AgoraError } from "../errors";
import { type Parsed, START_FLAG_KEYS } from "./args";

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
}

export const defaultIo: Io = {
  out: (s) => process.stdout.write(s.endsWith("\n") ? s : `${s}\n`),
  err: (s) => process.stderr.write(s.endsWith("\n") ? s : `${s}\n`),
  env: process.env,
};

/** Builds the config overrides a `start`-style command gives on its flags. */
export function flagOverrides(values: Parsed["values"]): { path: string; value: string; source: string }[] {
  const out: { path: string; value: string; source: string }[] = [];
  for (const [flag, path] of Object.entries(START_FLAG_KEYS)) {
    const v = values[flag];
    if (typeof v === "string") out.push({ path, value: v, source: `--${flag}` });
  }
  const boots = values.bootstrap;
  if (Array.isArray(boots)) out.push({ path: "network.bootstrap_peers", value: JSON.stringify(boots), source: "--bootstrap" });
  const sets = values.set;
  if (Array.isArray(sets))
    for (const s of sets) {
      const eq = s.indexOf("=");
      if (eq <= 0) throw new AgoraError("USAGE", `--set: expected KEY=VALUE, got "${s}"`);
      out.push({ path: s.slice(0, eq).trim(), value: s.slice(eq + 1), source: "--set" });
    }
  return out;
}

/** Loads the config a command names (--config, else AGORA_CONFIG, else embedded defaults). */
export function loadForCommand(
  values: Parsed["values"],
  env: Io["env"],
  extra: { path: string; value: string; source: string }[] = [],
): LoadedConfig {
  const file = typeof values.config === "string" ? values.config : env.AGORA_CONFIG || undefined;
  const dataDir =
    typeof values["data-dir"] === "string" ? [{ path: "node.data_dir", value: values["data-dir"], source: "--data-dir" }] : [];
  return loadConfig({ file, env, overrides: [...dataDir, ...extra] });
}
