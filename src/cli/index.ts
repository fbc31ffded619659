/**
 * The agora-node command line. Each command returns an exit code; only `start` keeps the process alive.
 */
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { type AgoraConfig, loadConfig, renderDefaultConfig, renderEffectiveConfig } from "../config";
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
} from "./args";
import { defaultIo, flagOverrides, type Io, loadForCommand } from "./context";
import { runHealth, runStatus, runStop } from "./control";
import { runIdentity } from "./identity";
import { runDiscover, runJoin, runLoadgen, runRooms } from "./network-commands";
import { runRoom } from "./room";
import { runStart } from "./start";

export { flagOverrides, type Io, loadForCommand };

import { VERSION } from "../version";
import { runVersion } from "./version";

export { VERSION };

function reportConfigError(io: Io, err: ConfigError): void {
  for (const w of err.warnings) io.err(`warning: ${formatIssue(w)}`);
  io.err(`agora-node: invalid configuration (${err.issues.length} problem${err.issues.length === 1 ? "" : "s"}):`);
  for (const i of err.issues) io.err(`  ${formatIssue(i)}`);
}

function runConfig(p: Parsed, io: Io): number {
  const [sub, arg] = p.positionals;
  const overrides = flagOverrides(p.values);
  if (sub !== "show" && overrides.length > 0)
    throw new AgoraError("USAGE", `config ${sub}: ${overrides[0]!.source} applies to config show (and start) only`);
  switch (sub) {
    case "init": {
      const text = renderDefaultConfig();
      if (!arg) {
        io.out(text);
        return EXIT_OK;
      }
      if (existsSync(arg) && !p.values.force) throw new AgoraError("USAGE", `${arg} exists; use --force to overwrite it`);
      // 0644: the service reads it as an unprivileged (systemd: dynamic) user; the default holds no secret,
      // and secrets belong in dashboard.auth_token_file or root-only environment files, not here.
      writeFileSync(arg, text, { mode: 0o644 });
      chmodSync(arg, 0o644);
      io.err(`wrote the default configuration to ${arg}`);
      return EXIT_OK;
    }
    case "validate": {
      const file = arg ?? (typeof p.values.config === "string" ? p.values.config : undefined);
      if (!file) throw new AgoraError("USAGE", "config validate: missing PATH; usage: agora-node config validate PATH");
      const loaded = loadConfig({ file, env: {} });
      for (const w of loaded.warnings) io.err(`warning: ${formatIssue(w)}`);
      io.out(
        `${file}: valid${loaded.warnings.length ? ` (${loaded.warnings.length} warning${loaded.warnings.length === 1 ? "" : "s"})` : ""}`,
      );
      return EXIT_OK;
    }
    case "show": {
      if (arg) throw new AgoraError("USAGE", `config show: unexpected argument "${arg}" (use --config FILE)`);
      const loaded = loadForCommand(p.values, io.env, overrides);
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
      case "rooms":
        return await runRooms(parsed, io);
      case "join":
        return await runJoin(parsed, io);
      case "loadgen":
        return await runLoadgen(parsed, io);
      case "room":
        return await runRoom(parsed, io);
      case "version":
        return await runVersion(parsed, io);
    }
    throw new AgoraError("USAGE", `unknown command ${parsed.command.name}`);
  } catch (err) {
    if (err instanceof ConfigError) {
      reportConfigError(io, err);
      return EXIT_USAGE;
    }
    if (
      err instanceof AgoraError &&
      (err.code === "USAGE" || err.code === "CONFIG_IO" || err.code === "CONFIG_PARSE" || err.code === "CONFIG_INVALID")
    ) {
      io.err(`agora-node: ${err.message}`);
      return EXIT_USAGE;
    }
    io.err(`agora-node: ${err instanceof AgoraError ? err.message : `unexpected error: ${errorMessage(err)}`}`);
    return EXIT_FAILURE;
  }
}

export type { AgoraConfig };
export { COMMANDS, createLogger, numberFlag, requireFlag };
