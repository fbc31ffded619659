/**
 * The agora-node command line. Each command returns an exit code; only `start` keeps the process alive.
 */
import { existsSync, writeFileSync } from "node:fs";
import {
  type AgoraConfig,
  type LoadedConfig,
  loadConfig,
  renderDefaultConfig,
  renderEffectiveConfig,
} from "../config";
import { AgoraError, ConfigError, errorMessage, formatIssue } from "../errors";
import { createLogger } from "../log";
import {
  COMMANDS,
  commandHelp,
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  mainHelp,
  numberFlag,
  type Parsed,
  parseCommand,
  requireFlag,
  START_FLAG_KEYS,
} from "./args";
import { runDiscover, runJoin, runLoadgen } from "./network-commands";
import { runStart } from "./start";
import { runHealth, runStatus, runStop } from "./control";
import { runIdentity } from "./identity";
import { runVersion } from "./version";

import { VERSION } from "../version";

export { VERSION };

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
}

const defaultIo: Io = {
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
export function loadForCommand(values: Parsed["values"], env: Io["env"], extra: { path: string; value: string; source: string }[] = []): LoadedConfig {
  const file = typeof values.config === "string" ? values.config : env.AGORA_CONFIG || undefined;
  const dataDir = typeof values["data-dir"] === "string" ? [{ path: "node.data_dir", value: values["data-dir"], source: "--data-dir" }] : [];
  return loadConfig({ file, env, overrides: [...dataDir, ...extra] });
}

function reportConfigError(io: Io, err: ConfigError): void {
  for (const w of err.warnings) io.err(`warning: ${formatIssue(w)}`);
  io.err(`agora-node: invalid configuration (${err.issues.length} problem${err.issues.length === 1 ? "" : "s"}):`);
  for (const i of err.issues) io.err(`  ${formatIssue(i)}`);
}

function runConfig(p: Parsed, io: Io): number {
  const [sub, arg] = p.positionals;
  switch (sub) {
    case "init": {
      const text = renderDefaultConfig();
      if (!arg) {
        io.out(text);
        return EXIT_OK;
      }
      if (existsSync(arg) && !p.values.force) throw new AgoraError("USAGE", `${arg} exists; use --force to overwrite it`);
      writeFileSync(arg, text, { mode: 0o640 });
      io.err(`wrote the default configuration to ${arg}`);
      return EXIT_OK;
    }
    case "validate": {
      const file = arg ?? (typeof p.values.config === "string" ? p.values.config : undefined);
      if (!file) throw new AgoraError("USAGE", "config validate: missing PATH; usage: agora-node config validate PATH");
      const loaded = loadConfig({ file, env: {} });
      for (const w of loaded.warnings) io.err(`warning: ${formatIssue(w)}`);
      io.out(`${file}: valid${loaded.warnings.length ? ` (${loaded.warnings.length} warning${loaded.warnings.length === 1 ? "" : "s"})` : ""}`);
      return EXIT_OK;
    }
    case "show": {
      if (arg) throw new AgoraError("USAGE", `config show: unexpected argument "${arg}" (use --config FILE)`);
      const loaded = loadForCommand(p.values, io.env);
      for (const w of loaded.warnings) io.err(`warning: ${formatIssue(w)}`);
      io.out(renderEffectiveConfig(loaded.config, loaded.origins));
      return EXIT_OK;
    }
    default:
      throw new AgoraError("USAGE", `config: unknown subcommand "${sub}"; expected init, validate or show`);
  }
}

export async function main(argv: string[], io: Io = defaultIo): Promise<number> {
  let parsed: ReturnType<typeof parseCommand>;
  try {
    parsed = parseCommand(argv);
  } catch (err) {
    io.err(`agora-node: ${errorMessage(err)}`);
    return EXIT_USAGE;
  }
  if ("version" in parsed) {
    io.out(`agora-node ${VERSION}`);
    return EXIT_OK;
  }
  if ("help" in parsed) {
    io.out(mainHelp(VERSION));
    return EXIT_OK;
  }
  if (parsed.values.help) {
    io.out(commandHelp(parsed.command));
    return EXIT_OK;
  }
  try {
    switch (parsed.command.name) {
      case "start":
        return await runStart(parsed, io, VERSION);
      case "stop":
        return await runStop(parsed, io);
      case "status":
        return await runStatus(parsed, io);
      case "health":
        return await runHealth(parsed, io);
      case "config":
        return runConfig(parsed, io);
      case "identity":
        return await runIdentity(parsed, io);
      case "discover":
        return await runDiscover(parsed, io);
      case "join":
        return await runJoin(parsed, io);
      case "loadgen":
        return await runLoadgen(parsed, io);
      case "version":
        return await runVersion(parsed, io);
    }
    throw new AgoraError("USAGE", `unknown command ${parsed.command.name}`);
  } catch (err) {
    if (err instanceof ConfigError) {
      reportConfigError(io, err);
      return EXIT_USAGE;
    }
    if (err instanceof AgoraError && (err.code === "USAGE" || err.code === "CONFIG_IO" || err.code === "CONFIG_PARSE" || err.code === "CONFIG_INVALID")) {
      io.err(`agora-node: ${err.message}`);
      return EXIT_USAGE;
    }
    io.err(`agora-node: ${err instanceof AgoraError ? err.message : `unexpected error: ${errorMessage(err)}`}`);
    return EXIT_FAILURE;
  }
}

export { COMMANDS, numberFlag, requireFlag, createLogger };
export type { AgoraConfig };
