/**
 * Typed errors shared by every subsystem. Each carries a stable machine-readable `code` (used in JSON API
 * errors, logs and CLI exit-code mapping) and an optional `where` (file:line, key path, peer id …) so a
 * message always names what is wrong and where.
 */
export type ErrorCode =
  | "CONFIG_INVALID"
  | "CONFIG_PARSE"
  | "CONFIG_IO"
  | "USAGE"
  | "IDENTITY_CORRUPT"
  | "IDENTITY_IO"
  | "DATA_DIR_LOCKED"
  | "STATE_IO"
  | "NOT_RUNNING"
  | "SHUTTING_DOWN"
  | "LISTEN_FAILED"
  | "PORT_IN_USE"
  | "UNAUTHORIZED"
  | "BAD_REQUEST"
  | "NOT_FOUND"
  | "CAPACITY"
  | "RECORD_INVALID"
  | "WIRE_PROTOCOL"
  | "MEDIA_ENGINE"
  | "P2P"
  | "INTERNAL";

export class AgoraError extends Error {
  readonly code: ErrorCode;
  readonly where?: string;
  constructor(code: ErrorCode, message: string, options?: { where?: string; cause?: unknown }) {
    super(options?.where ? `${options.where}: ${message}` : message, { cause: options?.cause });
    this.name = "AgoraError";
    this.code = code;
    this.where = options?.where;
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** One problem found while validating a config source (file, environment, CLI flag). */
export interface ConfigIssue {
  /** `node.toml:3`, `env AGORA_NODE_LISTEN_PORT`, `--mode` … */
  source: string;
  /** Dotted key path, e.g. `node.listen_port`. */
  path: string;
  message: string;
}

/** Raised with every problem found at once, so an operator fixes a file in one pass. */
export class ConfigError extends AgoraError {
  readonly issues: ConfigIssue[];
  /** Warnings found in the same pass, reported beside the errors. */
  readonly warnings: ConfigIssue[];
  constructor(issues: ConfigIssue[], warnings: ConfigIssue[] = []) {
    super("CONFIG_INVALID", issues.map(formatIssue).join("\n"));
    this.name = "ConfigError";
    this.issues = issues;
    this.warnings = warnings;
  }
}

export function formatIssue(i: ConfigIssue): string {
  return i.path ? `${i.source} ${i.path}: ${i.message}` : `${i.source}: ${i.message}`;
}

/**
 * A listener whose port another process holds: one line naming the config key, the port and the address,
 * e.g. `dashboard.port 8080 on 127.0.0.1 is in use`.
 */
export function portInUse(setting: string, hostname: string, port: number, cause?: unknown): AgoraError {
  return new AgoraError(
    "PORT_IN_USE",
    `${setting} ${port} on ${hostname} is in use (another agora-node or another program listens there); choose another port or stop that process`,
    { cause },
  );
}

/** Whether an error (or its text) is the kernel's EADDRINUSE, as Node, Bun and libp2p report it. */
export function isAddressInUse(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code === "EADDRINUSE" || /EADDRINUSE|address already in use/i.test(errorMessage(err));
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function errorCode(err: unknown): ErrorCode {
  return err instanceof AgoraError ? err.code : "INTERNAL";
}
