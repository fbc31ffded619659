/**
 * The node's UDP socket, bound to the P2P listen port's number (node.listen_port, UDP). STUN learns the
 * public mapping of exactly this socket, so the UDP media endpoint (a later subsystem) must send from it too:
 * it is shared by fan-out — every datagram goes to every receiver, each takes what is its own (STUN
 * responses carry the magic cookie; media frames do not).
 */
import { AgoraError } from "../errors";

export interface UdpPeer {
  address: string;
  port: number;
}

export interface UdpEndpoint {
  /** The bound address and port (the port is the one STUN reports a mapping for). */
  readonly local: UdpPeer;
  send(data: Uint8Array, to: UdpPeer): void;
  /**
   * Many datagrams in one call: `[data, port, address, data, port, address, …]` (Bun's sendMany); returns
   * how many went out: the kernel stops at the first one it refuses (full buffer, firewall, ICMP error).
   */
  sendMany?(packets: Array<Uint8Array | number | string>): number;
  /** Adds a receiver of every datagram; returns the function that removes it. */
  onDatagram(receiver: (data: Uint8Array, from: UdpPeer) => void): () => void;
  /** Adds a listener for socket errors (ICMP unreachable as ECONNREFUSED); returns the remover. */
  onError(listener: (err: Error) => void): () => void;
  close(): void;
}

/** Binds a UDP socket; a port in use is a LISTEN_FAILED error naming address and port. */
export async function bindUdp(address: string, port: number): Promise<UdpEndpoint> {
  const receivers = new Set<(data: Uint8Array, from: UdpPeer) => void>();
  const errorHandlers = new Set<(err: Error) => void>();
  let socket: import("bun").udp.Socket<"uint8array">;
  try {
    socket = await Bun.udpSocket({
      hostname: address,
      port,
      binaryType: "uint8array",
      socket: {
        data(_s, data, fromPort, fromAddress) {
          const from = { address: fromAddress, port: fromPort };
          for (const r of receivers) {
            try {
              r(data, from);
            } catch {
              // One receiver's bug must not starve the others; receivers count their own errors.
            }
          }
        },
        // An ICMP "port unreachable" for an earlier datagram surfaces here as ECONNREFUSED. On an unconnected
        // socket it says only that one destination is closed; the STUN transaction times out on its own.
        // Without this handler Bun raises it as an uncaught error and the node would die.
        error(_s, err) {
          for (const h of errorHandlers) h(err);
        },
      },
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === "EADDRINUSE" || /in use/i.test(e.message) ? "address already in use" : e.message;
    throw new AgoraError("LISTEN_FAILED", `cannot bind the node's UDP socket on ${address}:${port}: ${why}`, { cause: err });
  }
  return {
    local: { address: socket.address.address, port: socket.port },
    send(data, to) {
      socket.send(data, to.port, to.address);
    },
    sendMany(packets) {
      return socket.sendMany(packets as Array<Uint8Array | number | string>);
    },
    onDatagram(receiver) {
      receivers.add(receiver);
      return () => void receivers.delete(receiver);
    },
    onError(listener) {
      errorHandlers.add(listener);
      return () => void errorHandlers.delete(listener);
    },
    close() {
      receivers.clear();
      errorHandlers.clear();
      socket.close();
    },
  };
}
