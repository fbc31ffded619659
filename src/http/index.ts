/**
 * The node's two HTTP listeners: the dashboard/API and the Prometheus endpoint. Each is a lifecycle part
 * (start/stop); a port that cannot be bound is a clear LISTEN_FAILED error naming address and port.
 */
import { type AnyElysia, Elysia } from "elysia";
import { AgoraError, isAddressInUse, portInUse } from "../errors";
import { createDashboardApp } from "./app";
import type { DashboardSource } from "./types";

export { createDashboardApp } from "./app";
export { formatBytes, formatDuration, formatStun, sparkline } from "./dashboard";
export { participantReport } from "./models";
export type * from "./types";

/** Request bodies are tiny (a login form); anything larger is refused before it is read. */
const MAX_BODY = 64 * 1024;

interface Listening {
  stop(): Promise<void> | void;
  port: number;
}

function listen(app: AnyElysia, hostname: string, port: number, what: string, setting: string): Listening {
  try {
    // Elysia turns SO_REUSEPORT on by default: a second node on the same port would then start and the
    // kernel would split requests between both. Off, the second bind fails with EADDRINUSE as it should.
    app.listen({ hostname, port, maxRequestBodySize: MAX_BODY, idleTimeout: 30, reusePort: false });
  } catch (err) {
    if (isAddressInUse(err)) throw portInUse(setting, hostname, port, err);
    throw new AgoraError("LISTEN_FAILED", `cannot listen for the ${what} on ${hostname}:${port}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const server = app.server;
  if (!server) throw new AgoraError("LISTEN_FAILED", `cannot listen for the ${what} on ${hostname}:${port}`);
  return {
    port: server.port ?? port,
    stop: async () => {
      await app.stop(true);
    },
  };
}

export class DashboardServer {
  private running?: Listening;
  constructor(
    private readonly source: DashboardSource,
    private readonly hostname: string,
    private readonly port: number,
  ) {}
  readonly name = "dashboard";
  async start(): Promise<void> {
    this.running = listen(createDashboardApp(this.source), this.hostname, this.port, "dashboard", "dashboard.port");
  }
  async stop(): Promise<void> {
    await this.running?.stop();
    this.running = undefined;
  }
  url(): string {
    const host = this.hostname.includes(":") ? `[${this.hostname}]` : this.hostname;
    return `http://${host}:${this.running?.port ?? this.port}`;
  }
}

export class MetricsServer {
  private running?: Listening;
  constructor(
    private readonly render: () => Promise<string>,
    private readonly contentType: string,
    private readonly hostname: string,
    private readonly port: number,
    private readonly endpoint: string,
  ) {}
  readonly name = "metrics";
  async start(): Promise<void> {
    const app = new Elysia()
      .get(this.endpoint, async ({ set }) => {
        set.headers["content-type"] = this.contentType;
        return this.render();
      })
      .onError(
        ({ code }) =>
          new Response(
            JSON.stringify({
              error: {
                code: code === "NOT_FOUND" ? "NOT_FOUND" : "INTERNAL",
                message: code === "NOT_FOUND" ? `metrics are at ${this.endpoint}` : "internal error",
              },
            }),
            {
              status: code === "NOT_FOUND" ? 404 : 500,
              headers: { "content-type": "application/json" },
            },
          ),
      );
    this.running = listen(app, this.hostname, this.port, "metrics", "metrics.port");
  }
  async stop(): Promise<void> {
    await this.running?.stop();
    this.running = undefined;
  }
}
