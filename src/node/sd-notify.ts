/**
 * systemd's service notification protocol (sd_notify(3)): under `Type=notify` the node tells systemd when it
 * is ready (READY=1), reloading (RELOADING=1 … READY=1), stopping (STOPPING=1), what it is doing (STATUS=)
 * and, under `WatchdogSec=`, that its event loop still runs (WATCHDOG=1 every half period).
 *
 * The protocol is one datagram per message on the AF_UNIX SOCK_DGRAM socket named by $NOTIFY_SOCKET (a path,
 * or `@name` for the abstract namespace). Bun 1.4.5 has no JavaScript API that sends such a datagram:
 * node:dgram knows only udp4/udp6, Bun.udpSocket only UDP over IP, and unix sockets of node:net and
 * Bun.connect are SOCK_STREAM (connecting one to a datagram socket fails with EPROTOTYPE). Spawning the
 * `systemd-notify` binary would need that binary on the host (distroless has none) and `NotifyAccess=all`,
 * since the message would come from another PID. So this calls libc's socket(2)/sendto(2) through bun:ffi:
 * libc is the one library the executable links anyway, and the calls are non-blocking (MSG_DONTWAIT).
 * Without $NOTIFY_SOCKET (not under systemd) every call is a no-op.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import type { Logger } from "../log";

export interface ServiceNotifier {
  /** True when $NOTIFY_SOCKET names a socket and messages are sent. */
  readonly enabled: boolean;
  /** Sends one message (`KEY=value` lines); false when it could not be sent. */
  notify(message: string): boolean;
  ready(status: string): void;
  /** RELOADING=1 with the monotonic timestamp systemd wants; send ready() when done. */
  reloading(): void;
  stopping(status: string): void;
  status(text: string): void;
  /** Starts WATCHDOG=1 keep-alives at half of $WATCHDOG_USEC when systemd asked for them. */
  startWatchdog(): void;
  close(): void;
}

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const CLOCK_MONOTONIC = 1;
/** sizeof(struct sockaddr_un): 2 bytes of family, 108 of path. */
const SOCKADDR_UN_SIZE = 110;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  sendto(fd: number, buf: Uint8Array, len: number, flags: number, addr: Uint8Array, addrLen: number): number;
  close(fd: number): number;
  monotonicUsec(): bigint;
}

function openLibc(): Libc {
  // Opened only under systemd, so nothing else pays for it.
  const lib = dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i64 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  });
  const s = lib.symbols;
  return {
    socket: (d, t, p) => s.socket(d, t, p),
    sendto: (fd, buf, len, flags, addr, addrLen) => Number(s.sendto(fd, ptr(buf), len, flags, ptr(addr), addrLen)),
    close: (fd) => s.close(fd),
    monotonicUsec() {
      const ts = new BigInt64Array(2); // struct timespec { tv_sec; tv_nsec } on x86-64
      s.clock_gettime(CLOCK_MONOTONIC, ptr(ts));
      return ts[0]! * 1_000_000n + ts[1]! / 1000n;
    },
  };
}

/** struct sockaddr_un for a path or an abstract name (`@name`), and the address length to pass. */
export function unixAddress(socketPath: string): { addr: Uint8Array; length: number } {
  const abstract = socketPath.startsWith("@");
  const name = new TextEncoder().encode(abstract ? socketPath.slice(1) : socketPath);
  // Abstract names start with a NUL byte and have no terminator; paths are NUL-terminated.
  const length = abstract ? 3 + name.length : 2 + name.length + 1;
  if (length > SOCKADDR_UN_SIZE)
    throw new Error(`NOTIFY_SOCKET is longer than a unix socket address allows (${socketPath.length} characters)`);
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, abstract ? 3 : 2);
  return { addr, length };
}

/** Watchdog keep-alive period in ms from $WATCHDOG_USEC/$WATCHDOG_PID, or undefined when not asked for. */
export function watchdogIntervalMs(env: Record<string, string | undefined>, pid = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isFinite(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

const DISABLED: ServiceNotifier = {
  enabled: false,
  notify: () => false,
  ready: () => undefined,
  reloading: () => undefined,
  stopping: () => undefined,
  status: () => undefined,
  startWatchdog: () => undefined,
  close: () => undefined,
};

export function systemdNotifier(log: Logger, env: Record<string, string | undefined> = process.env): ServiceNotifier {
  const socketPath = env.NOTIFY_SOCKET;
  if (!socketPath) return DISABLED;
  if (!socketPath.startsWith("/") && !socketPath.startsWith("@")) {
    log.warn({ notify_socket: socketPath }, "NOTIFY_SOCKET is neither a path nor an abstract name; not notifying systemd");
    return DISABLED;
  }
  let libc: Libc;
  let fd: number;
  let target: { addr: Uint8Array; length: number };
  try {
    target = unixAddress(socketPath);
    libc = openLibc();
    fd = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error("socket(AF_UNIX, SOCK_DGRAM) failed");
  } catch (err) {
    log.warn({ notify_socket: socketPath, err: (err as Error).message }, "cannot notify systemd");
    return DISABLED;
  }
  let timer: ReturnType<typeof setInterval> | undefined;
  let warned = false;
  const notify = (message: string): boolean => {
    if (fd < 0) return false;
    const bytes = new TextEncoder().encode(message);
    const sent = libc.sendto(fd, bytes, bytes.length, MSG_DONTWAIT | MSG_NOSIGNAL, target.addr, target.length);
    if (sent !== bytes.length && !warned) {
      warned = true; // once: a gone systemd must not fill the log every watchdog period
      log.warn({ notify_socket: socketPath, message: message.split("\n")[0] }, "could not send a notification to systemd");
    }
    return sent === bytes.length;
  };
  // STATUS= is one line of text for `systemctl status`.
  const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ");
  return {
    enabled: true,
    notify,
    ready: (status) => void notify(`READY=1\nSTATUS=${oneLine(status)}`),
    reloading: () => void notify(`RELOADING=1\nMONOTONIC_USEC=${libc.monotonicUsec()}\nSTATUS=reloading the configuration`),
    stopping: (status) => void notify(`STOPPING=1\nSTATUS=${oneLine(status)}`),
    status: (text) => void notify(`STATUS=${oneLine(text)}`),
    startWatchdog() {
      const every = watchdogIntervalMs(env);
      if (every === undefined || timer) return;
      notify("WATCHDOG=1");
      timer = setInterval(() => notify("WATCHDOG=1"), every);
      timer.unref?.();
      log.debug({ every_ms: every }, "systemd watchdog keep-alive started");
    },
    close() {
      clearInterval(timer);
      timer = undefined;
      if (fd >= 0) libc.close(fd);
      fd = -1;
    },
  };
}
