/**
 * A logger that drops everything, for SDK parts that log when the caller gives a logger and stay quiet
 * otherwise. src/log (pino, pino-pretty: worker threads, files) must not reach a browser bundle, so only its
 * type is imported here.
 */
import type { Logger } from "../log";

const noop = (): void => {};

export function quietLogger(): Logger {
  const log = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop, level: "silent", child: () => log };
  return log as unknown as Logger;
}
