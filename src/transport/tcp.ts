/**
 * @libp2p/tcp with a crash fixed: an aborted dial must not kill the process.
 *
 * @libp2p/tcp 11.0.28 spreads its dial options, AbortSignal included, into `net.connect()`. When the signal
 * fires while the socket is still connecting (a dial timeout, a DHT query that finished, a parallel dial
 * that won), two things react: net destroys the socket *with* an AbortError, emitted as 'error' on the next
 * tick, and libp2p's own abort handler, which runs first, rejects the dial and removes its 'error' listener.
 * The error is then emitted with no listener: an uncaught exception, which terminates a Bun (or Node)
 * process. On the internet every dial to a dead peer can end this way.
 *
 * The fix keeps the signal away from net.connect and leaves the abort to libp2p, which already destroys
 * the socket itself (without an error) when the signal fires: the options handed to the internal
 * `_connect` carry `signal` as a non-enumerable property, so the `{ ...options }` that builds net.connect's
 * options drops it while libp2p's direct `options.signal` reads still see it. The dial/upgrade path keeps
 * the original options object. Pinned to @libp2p/tcp 11.0.28; test/transport/tcp-abort.test.ts guards it.
 *
 * Every libp2p node in agora-node must use `agoraTcp()` instead of `tcp()`.
 */
import type { Transport } from "@libp2p/interface";
import { tcp } from "@libp2p/tcp";

type TcpFactory = ReturnType<typeof tcp>;
type ConnectFn = (ma: unknown, options: Record<string, unknown>) => Promise<unknown>;

export function agoraTcp(init?: Parameters<typeof tcp>[0]): TcpFactory {
  const factory = tcp(init);
  return (components) => {
    const transport = factory(components) as Transport & { _connect?: ConnectFn };
    const connect = transport._connect;
    if (typeof connect !== "function") {
      // A different @libp2p/tcp: fail loudly rather than silently run with the crash.
      throw new Error("@libp2p/tcp internals changed (_connect missing): re-check src/transport/tcp.ts");
    }
    transport._connect = function (ma, options) {
      const copy: Record<string, unknown> = { ...options };
      delete copy.signal;
      Object.defineProperty(copy, "signal", { value: options.signal, enumerable: false, writable: true, configurable: true });
      return connect.call(this, ma, copy);
    };
    return transport;
  };
}
