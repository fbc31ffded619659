/**
 * libp2p over WebSocket (`/ws`), so a browser running stock js-libp2p (@libp2p/websockets,
 * noise, yamux) can dial a node. The dialing side is @libp2p/websockets unchanged (it runs in Bun, Node and
 * the browser); the listening side is @libp2p/websockets' own listener, bounded against bad input.
 *
 * Why the stock listener and not one on Bun.serve: it hands raw sockets to node:http with
 * `emit('connection')`, a path Bun has open reports about (oven-sh/bun#35281, foreign sockets get no HTTP
 * parser). Under Bun 1.4.5 with @libp2p/websockets 10.1.21 the plain-ws path works: Bun-to-Bun ping and
 * 32 MiB through a stream, and Debian's Chromium running stock js-libp2p (ping, 8 MiB, sha256 checked) are
 * tested in test/transport/websockets*.test.ts. A second listener implementation would be ours to maintain.
 *
 * The stock listener's own TLS (`/tls/ws` with a certificate) does not work under Bun 1.4.5: it sniffs the
 * first byte on a plain socket and hands TLS connections to an https.Server by emit('connection'), which Bun
 * does not terminate (curl gets "wrong version number"; that is oven-sh/bun#35281). So the node listens on
 * plain /ws and wss is a TLS reverse proxy in front of it (README: Caddy, nginx).
 *
 * What the stock listener does not bound under Bun, and this module adds (each rejection is reported through
 * `onReject` with a reason, which the node counts in `agora_ws_connections_rejected_total{reason}`):
 * - TCP connections that never finish the HTTP upgrade (nothing sent, half a request, plain HTTP): node:http
 *   under Bun never closes them. Each gets `upgradeTimeoutMs` (upgrade_timeout), at most
 *   `maxUpgradingSockets` at once (too_many_upgrading).
 * - an upgrade request that is not HTTP, or whose headers exceed node:http's limit (16 KiB): Bun's parser
 *   answers 400/431 and closes by itself, but nothing counted it. Its 'clientError' is now handled here
 *   (malformed_request, request_too_large): the same answer, a reset, and the count. (A 'clientError'
 *   listener takes the close over from node:http: without the reset such a socket would stay open, read and
 *   discarded, until upgrade_timeout.)
 * - the WebSocket message size: `ws` accepts 100 MiB messages and buffers a message whole before libp2p sees
 *   any of it; a noise transport message is at most 65 535 bytes, so anything above `maxMessageBytes` is
 *   closed by the WebSocket layer with 1009 (frame_too_large); malformed frames close with 1002/1007
 *   (malformed_frame).
 * - time and number of connections that have not finished the noise + yamux handshake: libp2p's own limits
 *   (10 pending inbound connections, 10 s) are shared with TCP, so a flood of idle WebSockets would stall
 *   TCP participants for 10 s. Here a WebSocket gets `handshakeTimeoutMs` to finish (handshake_timeout) and
 *   at most `maxPendingConnections` WebSockets handshake at once (too_many_pending); they are aborted, not
 *   closed politely, so a peer that does not answer a close frame holds nothing.
 *
 * It also fixes two faults of the stock listener under Bun: a reset connection was never closed (see
 * onWsServerConnection), and closing the listener never finished, so `libp2p.stop()` hung (see close).
 *
 * This reaches into internals of the stock listener (`server`, its net.Server; `wsServer.options`, the `ws` server's options read
 * on every upgrade; `onWsServerConnection`, which receives each upgraded socket; its `http`/`https`
 * servers); it throws when the listener is created if the first two change, like tcp.ts.
 */
import type { CreateListenerOptions, Listener, MultiaddrConnection, Transport, Upgrader } from "@libp2p/interface";
import { getNetConfig } from "@libp2p/utils";
import { webSockets } from "@libp2p/websockets";

export const WS_REJECT_REASONS = [
  "upgrade_timeout",
  "too_many_upgrading",
  "request_too_large",
  "malformed_request",
  "frame_too_large",
  "malformed_frame",
  "handshake_timeout",
  "handshake_failed",
  "too_many_pending",
  "denied",
] as const;
export type WsRejectReason = (typeof WS_REJECT_REASONS)[number];

/** Largest WebSocket message accepted. Noise messages are ≤ 65 535 bytes + 2 length bytes; 1 MiB leaves room for a sender that batches several. */
export const WS_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Time a WebSocket gets from its upgrade to a finished noise + yamux handshake (libp2p's own limit is 10 s). */
export const WS_HANDSHAKE_TIMEOUT_MS = 5_000;
/** WebSockets handshaking at once; below libp2p's 10 pending inbound connections so TCP always keeps some. */
export const WS_MAX_PENDING_CONNECTIONS = 4;
/** TCP connections on the WebSocket port that have not finished the HTTP upgrade yet (they hold a socket each). */
export const WS_MAX_UPGRADING_SOCKETS = 64;

export interface AgoraWebSocketsInit {
  maxMessageBytes?: number;
  handshakeTimeoutMs?: number;
  maxPendingConnections?: number;
  /** Time (and count) for a TCP connection to finish the HTTP upgrade; the time defaults to handshakeTimeoutMs. */
  upgradeTimeoutMs?: number;
  maxUpgradingSockets?: number;
  /** Called once per rejected WebSocket connection. */
  onReject?: (reason: WsRejectReason, remote: string) => void;
}

type WebSocketsFactory = ReturnType<typeof webSockets>;

/** The `ws` server socket, as far as this module touches it. */
interface WsSocket {
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: "error" | "close", fn: (...args: never[]) => void): void;
}

interface HttpServerLike {
  close(...args: unknown[]): unknown;
  emit(event: "close"): boolean;
}

interface RawSocket {
  remoteAddress?: string;
  remotePort?: number;
  resetAndDestroy(): void;
  on(event: "close", fn: () => void): void;
}

/** The socket node:http hands to 'clientError'. */
interface ClientErrorSocket {
  remoteAddress?: string;
  remotePort?: number;
  writable?: boolean;
  write?(data: string): unknown;
  resetAndDestroy?(): void;
  destroy(): void;
}

/** The internals of @libp2p/websockets 10.1.21's listener this module relies on. */
interface StockListenerInternals {
  server?: { on(event: "connection", fn: (socket: RawSocket) => void): void };
  http?: HttpServerLike & { on?(event: "clientError", fn: (err: Error & { code?: string }, socket: ClientErrorSocket) => void): void };
  https?: HttpServerLike;
  wsServer?: { options?: { maxPayload?: number } };
  onWsServerConnection?: (socket: WsSocket, req: { socket?: { remoteAddress?: string; remotePort?: number } } | undefined) => void;
}

/** Close codes the `ws` layer uses when it drops a connection for a bad frame. */
function frameCloseReason(code: number): WsRejectReason | undefined {
  if (code === 1009) return "frame_too_large";
  if (code === 1002 || code === 1007) return "malformed_frame";
  return undefined;
}

export function agoraWebSockets(init: AgoraWebSocketsInit = {}): WebSocketsFactory {
  const maxMessageBytes = init.maxMessageBytes ?? WS_MAX_MESSAGE_BYTES;
  const handshakeTimeoutMs = init.handshakeTimeoutMs ?? WS_HANDSHAKE_TIMEOUT_MS;
  const maxPending = init.maxPendingConnections ?? WS_MAX_PENDING_CONNECTIONS;
  const upgradeTimeoutMs = init.upgradeTimeoutMs ?? handshakeTimeoutMs;
  const maxUpgrading = init.maxUpgradingSockets ?? WS_MAX_UPGRADING_SOCKETS;
  const reject = init.onReject ?? (() => undefined);
  const factory = webSockets();
  return (components) => {
    const transport = factory(components) as Transport;
    const createListener = transport.createListener.bind(transport);
    let pending = 0;
    transport.createListener = (options: CreateListenerOptions): Listener => {
      // Remote host:port of sockets the ws layer closed for a bad frame, so the upgrade failure that follows
      // is not counted twice. Entries live only until that failure has been seen.
      const frameClosed = new Set<string>();
      const upgrader = options.upgrader;
      const bounded: Upgrader = Object.create(upgrader) as Upgrader;
      bounded.upgradeInbound = async (maConn: MultiaddrConnection, opts) => {
        const net = getNetConfig(maConn.remoteAddr);
        const remote = remoteKey(net.host, net.port);
        if (pending >= maxPending) {
          reject("too_many_pending", remote);
          maConn.abort(new Error(`more than ${maxPending} WebSocket connections handshaking`));
          return;
        }
        pending++;
        const timeout = AbortSignal.timeout(handshakeTimeoutMs);
        const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
        try {
          await upgrader.upgradeInbound(maConn, { ...opts, signal });
        } catch (err) {
          // A frame error already closed the socket and was counted by its close code.
          if (!frameClosed.has(remote)) {
            const name = err instanceof Error ? err.name : "";
            reject(timeout.aborted ? "handshake_timeout" : name === "ConnectionDeniedError" ? "denied" : "handshake_failed", remote);
          }
          maConn.abort(err instanceof Error ? err : new Error(String(err)));
          throw err;
        } finally {
          pending--;
        }
      };
      const listener = createListener({ ...options, upgrader: bounded }) as Listener & StockListenerInternals;
      const wsServer = listener.wsServer;
      const onConnection = listener.onWsServerConnection;
      if (!wsServer?.options || typeof onConnection !== "function") {
        throw new Error(
          "@libp2p/websockets internals changed (wsServer.options or onWsServerConnection missing): re-check src/transport/websockets.ts",
        );
      }
      wsServer.options.maxPayload = maxMessageBytes;
      // Under Bun a TCP connection that never completes the HTTP upgrade (sends nothing, half a request, or
      // plain HTTP) is never closed by node:http. Bound how many there are and how long they get. Once
      // node:http holds a socket with a whole request, destroy() no longer closes it under Bun; a reset does.
      const upgrading = new Map<string, ReturnType<typeof setTimeout>>();
      const netServer = listener.server;
      if (typeof netServer?.on !== "function") {
        throw new Error("@libp2p/websockets internals changed (server missing): re-check src/transport/websockets.ts");
      }
      netServer.on("connection", (raw) => {
        const key = remoteKey(raw.remoteAddress, raw.remotePort);
        if (upgrading.size >= maxUpgrading) {
          reject("too_many_upgrading", key);
          raw.resetAndDestroy();
          return;
        }
        const timer = setTimeout(() => {
          if (!upgrading.delete(key)) return;
          reject("upgrade_timeout", key);
          raw.resetAndDestroy();
        }, upgradeTimeoutMs);
        upgrading.set(key, timer);
        raw.on("close", () => {
          clearTimeout(timer);
          upgrading.delete(key);
        });
      });
      // Bun's parser may report one bad request more than once (each chunk read after the error).
      const clientErrors = new WeakSet<ClientErrorSocket>();
      const onClientError = (err: Error & { code?: string }, socket: ClientErrorSocket) => {
        if (clientErrors.has(socket)) return;
        clientErrors.add(socket);
        const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
        reject(tooLarge ? "request_too_large" : "malformed_request", remoteKey(socket.remoteAddress, socket.remotePort));
        try {
          if (socket.writable)
            socket.write?.(
              tooLarge
                ? "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n"
                : "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n",
            );
        } finally {
          // Under Bun only a reset closes a socket node:http holds (see above).
          if (socket.resetAndDestroy) socket.resetAndDestroy();
          else socket.destroy();
        }
      };
      // The stock listener creates its node:http server in listen().
      const listen = listener.listen.bind(listener);
      listener.listen = async (ma) => {
        await listen(ma);
        listener.http?.on?.("clientError", onClientError);
      };
      listener.onWsServerConnection = (socket, req) => {
        const key = remoteKey(req?.socket?.remoteAddress, req?.socket?.remotePort);
        const timer = upgrading.get(key);
        if (timer) {
          clearTimeout(timer);
          upgrading.delete(key);
        }
        // The stock connection resets with close(1006), which `ws` refuses (a code no endpoint may send):
        // it throws, the error is swallowed, and the socket stays open for ever. A reset is a terminate.
        const close = socket.close.bind(socket);
        socket.close = (code?: number, reason?: string) => (code === 1006 ? socket.terminate() : close(code, reason));
        // `ws` reports a bad frame as 'error' (then closes with 1009 or 1002/1007); without a listener that
        // error is unhandled. It comes before the close and before libp2p's failed upgrade, which must not
        // count the same connection again.
        let counted = false;
        const count = (reason: WsRejectReason) => {
          if (counted) return;
          counted = true;
          reject(reason, key);
          frameClosed.add(key);
          setTimeout(() => frameClosed.delete(key), handshakeTimeoutMs + 1000).unref?.();
        };
        socket.on("error", (err: Error) => count(/payload|too (big|large)/i.test(err.message) ? "frame_too_large" : "malformed_frame"));
        socket.on("close", (code: number) => {
          const reason = frameCloseReason(code);
          if (reason) count(reason);
        });
        onConnection.call(listener, socket, req);
      };
      // The stock close() waits for 'close' from its node:http server, which only ever received sockets by
      // emit('connection') and never listened itself; Bun's http.Server then never emits 'close', so
      // libp2p.stop() hung for ever once a WebSocket listener existed. Emit it for Bun.
      const closeListener = listener.close.bind(listener);
      listener.close = async () => {
        for (const server of [listener.http, listener.https]) {
          if (!server || typeof Bun === "undefined") continue;
          const closeServer = server.close.bind(server);
          server.close = (...args: unknown[]) => {
            const result = closeServer(...args);
            setImmediate(() => server.emit("close"));
            return result;
          };
        }
        await closeListener();
      };
      return listener;
    };
    return transport;
  };
}

function remoteKey(host: string | undefined, port: number | undefined): string {
  return `${host ?? "?"}:${port ?? 0}`;
}
