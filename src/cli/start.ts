/** `agora-node start`: runs the node until a stop signal (graceful drain) or a second one (forced); see signalPlan. */
import { formatIssue } from "../errors";
import { createLogger, type LogLevel } from "../log";
import { NodeRuntime } from "../node";
import { EXIT_FAILURE, EXIT_OK, type Parsed } from "./args";
import { flagOverrides, type Io, loadForCommand } from "./context";

/**
 * Which signals drain and stop the node, and which reload its config, on each OS. Windows delivers no
 * SIGTERM: Ctrl-C is SIGINT, Ctrl-Break SIGBREAK, and closing the console SIGHUP (Windows then kills the
 * process about 10 s later, so a longer drain is cut short there). So SIGHUP stops there, and reload is
 * `POST /api/reload` (the same reload the dashboard and systemctl reload use).
 */
export function signalPlan(platform: NodeJS.Platform = process.platform): { stop: NodeJS.Signals[]; reload: NodeJS.Signals[] } {
  if (platform === "win32") return { stop: ["SIGINT", "SIGBREAK", "SIGHUP", "SIGTERM"], reload: [] };
  return { stop: ["SIGTERM", "SIGINT"], reload: ["SIGHUP"] };
}

const TRANSIENT_SOCKET_ERRORS = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ABORT_ERR",
  "ERR_STREAM_DESTROYED",
]);

export async function runStart(p: Parsed, io: Io, version: string): Promise<number> {
  const overrides = flagOverrides(p.values);
  const loaded = loadForCommand(p.values, io.env, overrides);
  const c = loaded.config;
  const logs = createLogger({ level: c.logging.level as LogLevel, format: c.logging.format, file: c.logging.file || undefined });
  const log = logs.logger;
  for (const w of loaded.warnings) log.warn({ source: w.source, key: w.path || undefined }, formatIssue(w));
  if (!loaded.file)
    log.info("no config file given: running on the embedded defaults (agora-node config init > node.toml to write them out)");

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
  const onReload = (signal: string) => {
    // logrotate renames the file and sends SIGHUP: from here on, lines go to a new file of the same name.
    logs.reopen();
    log.info({ signal }, "reloading the configuration");
    void runtime.reload();
  };
  const plan = signalPlan();
  const handlers = [
    ...plan.stop.map((signal) => [signal, () => onStop(signal)] as const),
    ...plan.reload.map((signal) => [signal, () => onReload(signal)] as const),
  ];
  const offSignals = () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
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
  for (const [signal, handler] of handlers) process.on(signal, handler);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onRejection);

  try {
    await runtime.start();
  } catch (err) {
    offSignals();
    log.fatal({ code: (err as { code?: string }).code, err: (err as Error).message }, "failed to start");
    logs.close();
    throw err;
  }
  const code = await finished;
  offSignals();
  logs.close();
  return code;
}
