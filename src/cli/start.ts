/** `agora-node start`: runs the node until SIGTERM/SIGINT (graceful drain) or a second signal (forced). */
import { formatIssue } from "../errors";
import { createLogger, type LogLevel } from "../log";
import { NodeRuntime } from "../node";
import { EXIT_FAILURE, EXIT_OK, type Parsed } from "./args";
import { flagOverrides, type Io, loadForCommand } from "./index";

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
    log.info({ signal: "SIGHUP" }, "reloading the configuration");
    void runtime.reload();
  };
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);

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
