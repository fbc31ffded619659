/**
 * Structured logging (pino). json or text as configured, to stdout and optionally to a file.
 * Transports are not used: they spawn worker threads from files on disk, which a single compiled
 * executable does not have; pino-pretty is used as a plain stream instead.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import pino from "pino";
import pretty from "pino-pretty";

export type Logger = pino.Logger;
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal";
export type LogFormat = "json" | "text";
export const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal"];

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Also append to this file when set (parent directories are created). */
  file?: string;
  /** Destination for the console stream; stdout by default (tests pass their own). */
  stdout?: NodeJS.WritableStream;
}

function formatStream(format: LogFormat, out: NodeJS.WritableStream | pino.DestinationStream): pino.DestinationStream {
  if (format === "json") return out as pino.DestinationStream;
  return pretty({
    destination: out as NodeJS.WritableStream,
    colorize: false,
    sync: true,
    translateTime: "SYS:yyyy-mm-dd'T'HH:MM:ss.l",
    ignore: "pid,hostname",
    singleLine: true,
  }) as unknown as pino.DestinationStream;
}

export interface LogHandle {
  logger: Logger;
  /** Change the level of every stream at once (SIGHUP reload). */
  setLevel(level: LogLevel): void;
  /**
   * Reopens the log file by its path (SIGHUP): after logrotate renamed it, lines go to a new file of that
   * name instead of the rotated one. No-op without a log file.
   */
  reopen(): void;
  /** Flush file output; call before exit. */
  close(): void;
}

export function createLogger(opts: LoggerOptions): LogHandle {
  const streams: pino.StreamEntry[] = [];
  const console = opts.stdout ?? pino.destination({ fd: 1, sync: true });
  streams.push({ level: "trace", stream: formatStream(opts.format, console) });
  let fileDest: (pino.DestinationStream & { flushSync?: () => void; end?: () => void; reopen?: (file?: string) => void }) | undefined;
  if (opts.file) {
    mkdirSync(dirname(opts.file), { recursive: true });
    fileDest = pino.destination({ dest: opts.file, sync: true, mkdir: true, append: true });
    streams.push({ level: "trace", stream: formatStream(opts.format, fileDest) });
  }
  const logger = pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // "info", not 30: journald, log shippers and people read level names; numbers made every line look alike.
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.multistream(streams),
  );
  return {
    logger,
    setLevel(level) {
      logger.level = level;
    },
    reopen() {
      if (!fileDest?.reopen) return;
      fileDest.flushSync?.();
      fileDest.reopen();
    },
    close() {
      try {
        fileDest?.flushSync?.();
      } catch {
        /* nothing left to flush */
      }
    },
  };
}

/** A logger that drops everything: for unit tests and one-shot CLI commands. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
