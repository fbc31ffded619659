/** `agora-node start`: runs the node until SIGTERM/SIGINT (graceful drain) or a second signal (forced). */
import { formatIssue } from "../errors";
import { createLogger, type LogLevel } from "../log";
import { NodeRuntime } from "../node";
import { EXIT_FAILURE, EXIT_OK, type Parsed } from "./args";
import { flagOverrides, type Io, loadForCommand } from "./context";

const TRANSIENT_SOCKET_ERRORS = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNREFUSED", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH", "ABORT_ERR", "ERR_STREAM_DESTROYED"]);

export async function runStart(p: Parsed, io: Io, version: string): Promise<number> {
  const overrides = flagOverrides(p.values);
  const loaded = loadForCommand(p.values, io.env, overrides);
  const c = loaded.config;
  const logs = createLogger({ level: c.logging.level as LogLevel, format: c.logging.format, file: c.logging.file || undefined });
  const log = logs.logger;
  for (const w of loaded.warnings) log.warn({ source: w.source, key: w.path || undefined }, formatIssue(w));
  if (!loaded.file) log.info("no config file given: running on the embedded defaults (agora-node config init > node.toml to write them out)");

  const runtime = new NodeRuntime({
    loaded,
    reloadConfig: () => loadForCommand(p.values, io.env, overrides),
    logs,
    version,
  });

  let signals = 0;
  let done: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (done = resolve));
  const onStop = (signal: string) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, "second signal: exiting immediately without finishing the drain");
      logs.close();
      process.exit(EXIT_FAILURE);
    }
    log.info({ signal }, "shutting down: draining rooms first (send the signal again to force)");
    runtime
      .shutdown()
      .then(() => done(EXIT_OK))
      .catch((err) => {
        log.error({ err: (err as Error).message }, "shutdown failed");
        done(EXIT_FAILURE);
      });
  };
  const onTerm = () => onStop("SIGTERM");
  const onInt = () => onStop("SIGINT");
  const onHup = () => {
    // logrotate renames the file and sends SIGHUP: from here on, lines go to a new file of the same name.
    logs.reopen();
    log.info({ signal: "SIGHUP" }, "reloading the configuration");
    void runtime.reload();
  };
  // Last line of defence. A socket error that escaped its owner (a peer resetting a connection mid-write)
  // must not end every call on the node: log it and go on. Anything else leaves the process in an unknown
  // state: log it as fatal and exit 1 so the supervisor (systemd, the container runtime) restarts us.
  const onUncaught = (err: unknown) => {
    const e = err as NodeJS.ErrnoException;
    if (TRANSIENT_SOCKET_ERRORS.has(e?.code ?? "") || e?.name === "AbortError") {
      log.warn({ code: e.code, err: e.message }, "ignored a stray network error");
      return;
    }
    log.fatal({ err: e?.message, stack: e?.stack }, "uncaught exception; exiting so the supervisor restarts the node");
    logs.close();
    process.exit(EXIT_FAILURE);
  };
  const onRejection = (reason: unknown) => {
    log.error({ err: reason instanceof Error ? reason.message : String(reason) }, "unhandled promise rejection");
  };
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onRejection);

  try {
    await runtime.start();
  } catch (err) {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    process.off("SIGHUP", onHup);
    log.fatal({ code: (err as { code?: string }).code, err: (err as Error).message }, "failed to start");
    logs.close();
    throw err;
  }
  const code = await finished;
  process.off("SIGTERM", onTerm);
  process.off("SIGINT", onInt);
  process.off("SIGHUP", onHup);
  logs.close();
  return code;
}
