import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { defaultConfig, keyLines, loadConfig, renderDefaultConfig, renderEffectiveConfig, SCHEMA } from "../../src/config";
import { ConfigError } from "../../src/errors";
import { tempDir } from "../helpers/node-process";

function write(text: string, name = "node.toml"): string {
  const p = join(tempDir(), name);
  writeFileSync(p, text);
  return p;
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split("\n");
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("config loading", () => {
  test("embedded defaults are valid and match the seed's keys", () => {
    const { config, warnings } = loadConfig({ env: {} });
    expect(warnings).toEqual([]);
    expect(config.node.mode).toBe("dedicated");
    expect(config.node.listen_port).toBe(7001);
    expect(config.dashboard).toMatchObject({ enabled: true, listen_addr: "127.0.0.1", port: 8080 });
    expect(config.metrics).toMatchObject({ enabled: true, port: 9090, endpoint: "/metrics" });
    expect(config.logging).toMatchObject({ level: "info", format: "json" });
    expect(config.identity.key_file).toBe(join(config.node.data_dir, "identity.key"));
    for (const key of [
      "mode",
      "listen_addr",
      "listen_port",
      "max_connections",
      "max_mixers",
      "region",
      "group",
      "labels",
      "drain_timeout",
      "data_dir",
    ])
      expect(Object.keys(config.node)).toContain(key);
    expect(Object.keys(config.network)).toEqual(expect.arrayContaining(["bootstrap_peers", "enable_upnp", "stun_servers"]));
    expect(Object.keys(config.turn)).toEqual(["enabled", "url", "username", "password"]);
  });

  test("every schema key has a default of its own type in defaultConfig()", () => {
    const cfg = defaultConfig() as unknown as Record<string, Record<string, unknown>>;
    for (const s of SCHEMA) expect(cfg[s.section]![s.key]).toBeDefined();
  });

  test("config init output parses, loads without warnings and documents every key", () => {
    const text = renderDefaultConfig();
    expect(() => parse(text)).not.toThrow();
    const loaded = loadConfig({ file: write(text), env: {} });
    expect(loaded.warnings).toEqual([]);
    for (const s of SCHEMA) expect(text).toContain(`AGORA_${s.section.toUpperCase()}_${s.key.toUpperCase()}`);
  });

  test("the seed's example config loads (keys exactly as named in the seed)", () => {
    const seed = `
[node]
mode = "dedicated"
listen_addr = "0.0.0.0"
listen_port = 7001
max_connections = 100
max_mixers = 5
[identity]
key_file = "/var/lib/agora/identity.bin"
name = "Agora Node EU-West"
[network]
bootstrap_peers = ["/ip4/1.2.3.4/tcp/7001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
enable_upnp = true
stun_servers = ["stun.l.google.com:19302"]
[turn]
enabled = false
url = "turn:turn.example.com:3478"
username = ""
password = ""
[dashboard]
enabled = true
listen_addr = "127.0.0.1"
port = 8080
[metrics]
enabled = true
port = 9090
endpoint = "/metrics"
[logging]
level = "info"
file = "/var/log/agora/node.log"
format = "json"
`;
    const { config, warnings } = loadConfig({ file: write(seed), env: {} });
    expect(warnings).toEqual([]);
    expect(config.identity.name).toBe("Agora Node EU-West");
    expect(config.network.enable_upnp).toBe(true);
    expect(config.logging.file).toBe("/var/log/agora/node.log");
  });

  test("a bad value names file, line, key path, expectation and what was found", () => {
    const lines = issuesOf(() => loadConfig({ file: write('[node]\nmode = "dedicated"\nlisten_port = 70000\n'), env: {} }));
    expect(lines).toContain("node.toml:3 node.listen_port: expected integer 1..65535, got 70000");
  });

  test("several errors are reported at once", () => {
    const lines = issuesOf(() =>
      loadConfig({
        file: write('[node]\nmode = "mixer"\nmax_connections = -1\n[logging]\nformat = "xml"\n'),
        env: { AGORA_METRICS_PORT: "abc" },
      }),
    );
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe('node.toml:2 node.mode: expected one of dedicated | relay | bootstrap, got "mixer"');
    expect(lines[1]).toStartWith("node.toml:3 node.max_connections: expected integer");
    expect(lines[2]).toStartWith("node.toml:5 logging.format: expected one of json | text");
    expect(lines[3]).toBe('env AGORA_METRICS_PORT metrics.port: expected integer 1..65535, got "abc"');
  });

  test("unknown keys and sections are warnings with file, line and a typo hint", () => {
    const { warnings } = loadConfig({ file: write("[node]\nlisten_prot = 7002\n[dashbord]\nport = 1\n"), env: {} });
    expect(warnings.map((w) => `${w.source} ${w.path}: ${w.message}`)).toEqual([
      'node.toml:2 node.listen_prot: unknown key, ignored (did you mean "listen_port"?)',
      'node.toml:3 dashbord: unknown section, ignored (did you mean "dashboard"?)',
    ]);
  });

  test("TOML syntax errors name line and column", () => {
    const lines = issuesOf(() => loadConfig({ file: write("[node]\nmode = \n"), env: {} }));
    expect(lines[0]).toMatch(/^node\.toml:2:\d+: TOML syntax error/);
  });

  test("environment overrides are validated the same way and win over the file", () => {
    const file = write("[node]\nlisten_port = 7005\n");
    const { config, origins } = loadConfig({
      file,
      env: { AGORA_NODE_LISTEN_PORT: "7010", AGORA_NODE_LABELS: "gpu, tier=premium", AGORA_NETWORK_ENABLE_UPNP: "false" },
    });
    expect(config.node.listen_port).toBe(7010);
    expect(config.node.labels).toEqual(["gpu", "tier=premium"]);
    expect(origins["node.listen_port"]).toBe("env AGORA_NODE_LISTEN_PORT");
    expect(issuesOf(() => loadConfig({ env: { AGORA_NODE_LISTEN_PORT: "70000" } }))).toEqual([
      "env AGORA_NODE_LISTEN_PORT node.listen_port: expected integer 1..65535, got 70000",
    ]);
  });

  test("an unknown AGORA_ variable is a warning with a hint", () => {
    const { warnings } = loadConfig({ env: { AGORA_NODE_LISTEN_PROT: "1" } });
    expect(warnings[0]!.message).toContain('did you mean "AGORA_NODE_LISTEN_PORT"');
  });

  test("CLI overrides win over env", () => {
    const { config } = loadConfig({
      env: { AGORA_NODE_MODE: "relay" },
      overrides: [{ path: "node.mode", value: "bootstrap", source: "--mode" }],
    });
    expect(config.node.mode).toBe("bootstrap");
    expect(issuesOf(() => loadConfig({ env: {}, overrides: [{ path: "node.mode", value: "mixer", source: "--mode" }] }))[0]).toBe(
      '--mode node.mode: expected one of dedicated | relay | bootstrap, got "mixer"',
    );
  });

  test("durations accept seconds and unit strings", () => {
    const { config } = loadConfig({ file: write('[node]\ndrain_timeout = "2m"\n[network]\nheartbeat_interval = "500ms"\n'), env: {} });
    expect(config.node.drain_timeout).toBe(120);
    expect(config.network.heartbeat_interval).toBe(0.5);
    expect(issuesOf(() => loadConfig({ env: { AGORA_NODE_DRAIN_TIMEOUT: "soon" } }))[0]).toContain("expected a duration");
  });

  test("a non-loopback dashboard without a token is refused", () => {
    const lines = issuesOf(() => loadConfig({ env: { AGORA_DASHBOARD_LISTEN_ADDR: "0.0.0.0" } }));
    expect(lines[0]).toContain("dashboard.listen_addr: binding the dashboard to 0.0.0.0 (not loopback) requires an admin token");
    const ok = loadConfig({ env: { AGORA_DASHBOARD_LISTEN_ADDR: "0.0.0.0", AGORA_DASHBOARD_AUTH_TOKEN: "0123456789abcdef0123" } });
    expect(ok.config.dashboard.auth_token).toBe("0123456789abcdef0123");
  });

  test("the token file is read; short or missing tokens are errors", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "token"), "s3cret-s3cret-s3cret\n");
    const { config } = loadConfig({ env: { AGORA_DASHBOARD_AUTH_TOKEN_FILE: join(dir, "token") } });
    expect(config.dashboard.auth_token).toBe("s3cret-s3cret-s3cret");
    expect(issuesOf(() => loadConfig({ env: { AGORA_DASHBOARD_AUTH_TOKEN: "short" } }))[0]).toContain("at least 16 characters");
    expect(issuesOf(() => loadConfig({ env: { AGORA_DASHBOARD_AUTH_TOKEN_FILE: join(dir, "nope") } }))[0]).toContain("cannot read");
  });

  test("port conflicts are caught", () => {
    expect(issuesOf(() => loadConfig({ env: { AGORA_METRICS_PORT: "8080" } }))[0]).toContain("metrics.port: conflicts with dashboard.port");
  });

  test("voice datagram keys: port range, address, and no second socket on node.listen_port", () => {
    const { config } = loadConfig({ env: {} });
    expect(config.audio.udp_enabled).toBe(true);
    expect(config.audio.udp_port).toBe(0);
    expect(issuesOf(() => loadConfig({ env: { AGORA_AUDIO_UDP_PORT: "70000" } }))[0]).toContain(
      "audio.udp_port: expected integer 0..65535",
    );
    expect(issuesOf(() => loadConfig({ env: { AGORA_AUDIO_UDP_LISTEN_ADDR: "not-an-ip" } }))[0]).toContain("audio.udp_listen_addr");
    const clash = issuesOf(() =>
      loadConfig({ env: { AGORA_NODE_LISTEN_PORT: "7001", AGORA_AUDIO_UDP_PORT: "7001", AGORA_AUDIO_UDP_LISTEN_ADDR: "127.0.0.1" } }),
    );
    expect(clash[0]).toContain("audio.udp_port: equals node.listen_port (7001)");
    expect(loadConfig({ env: { AGORA_AUDIO_UDP_PORT: "7001" } }).config.audio.udp_port).toBe(7001); // same port and address: shared
  });

  test("the WebSocket listener: off by default, loopback unless plain ws on a public address is allowed, no port clash", () => {
    const { config } = loadConfig({ env: {} });
    expect(config.network.ws_port).toBe(0);
    expect(config.network.ws_listen_addr).toBe("127.0.0.1");
    expect(loadConfig({ env: { AGORA_NETWORK_WS_PORT: "7002" } }).config.network.ws_port).toBe(7002);
    const pub = issuesOf(() => loadConfig({ file: write('[network]\nws_port = 7002\nws_listen_addr = "0.0.0.0"\n'), env: {} }));
    expect(pub[0]).toStartWith("node.toml:3 network.ws_listen_addr: plain ws on 0.0.0.0 is not loopback");
    expect(
      loadConfig({ file: write('[network]\nws_port = 7002\nws_listen_addr = "0.0.0.0"\nws_allow_insecure_public = true\n'), env: {} })
        .config.network.ws_listen_addr,
    ).toBe("0.0.0.0");
    // Off (port 0) the address is not checked.
    expect(loadConfig({ file: write('[network]\nws_listen_addr = "0.0.0.0"\n'), env: {} }).config.network.ws_port).toBe(0);
    expect(issuesOf(() => loadConfig({ env: { AGORA_NETWORK_WS_PORT: "7001" } }))[0]).toContain(
      "network.ws_port: conflicts with node.listen_port (7001)",
    );
    expect(issuesOf(() => loadConfig({ env: { AGORA_NETWORK_WS_PORT: "70000" } }))[0]).toContain("network.ws_port");
  });

  test("bootstrap peers must be multiaddrs with a peer id", () => {
    const lines = issuesOf(() => loadConfig({ file: write('[network]\nbootstrap_peers = ["1.2.3.4:7001"]\n'), env: {} }));
    expect(lines[0]).toStartWith("node.toml:2 network.bootstrap_peers: entry 1: expected a multiaddr");
  });

  test("a missing or directory config file is a clear error", () => {
    expect(() => loadConfig({ file: "/nonexistent/node.toml", env: {} })).toThrow(
      "/nonexistent/node.toml: cannot read config: no such file",
    );
    expect(() => loadConfig({ file: tempDir(), env: {} })).toThrow("is a directory");
  });

  test("config show masks secrets and names origins", () => {
    const loaded = loadConfig({ env: { AGORA_TURN_PASSWORD: "hunter2", AGORA_DASHBOARD_AUTH_TOKEN: "0123456789abcdef0123" } });
    const text = renderEffectiveConfig(loaded.config, loaded.origins);
    expect(text).not.toContain("hunter2");
    expect(text).not.toContain("0123456789abcdef0123");
    expect(text).toContain('password = "********"   # env AGORA_TURN_PASSWORD');
  });

  test("keyLines finds keys under tables, dotted and quoted keys", () => {
    const lines = keyLines('# c\n[node]\nmode = "x"\n"region" = "y"\n\n[ logging ]\nlevel="info"\n');
    expect(lines.get("node.mode")).toBe(3);
    expect(lines.get("node.region")).toBe(4);
    expect(lines.get("logging.level")).toBe(7);
  });
});

describe("list and multiaddr validation", () => {
  const PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

  test("every bad entry of a list is reported with its index, not only the first", () => {
    const file = write(
      `[network]\nbootstrap_peers = ["/ip4/1.2.3.4/tcp/7001/p2p/${PEER}", "nope", "/ip4/1.2.3.4/tcp/99999/p2p/${PEER}"]\nstun_servers = ["a", "stun.example.com:3478", "b"]\n`,
    );
    const lines = issuesOf(() => loadConfig({ file, env: {} }));
    expect(lines.filter((l) => l.includes("network.bootstrap_peers"))).toEqual([
      expect.stringContaining("node.toml:2 network.bootstrap_peers: entry 2: expected a multiaddr"),
      expect.stringContaining("node.toml:2 network.bootstrap_peers: entry 3:"),
    ]);
    expect(lines.filter((l) => l.includes("network.stun_servers"))).toEqual([
      'node.toml:3 network.stun_servers: entry 1: expected host:port, got "a"',
      'node.toml:3 network.stun_servers: entry 3: expected host:port, got "b"',
    ]);
    // The same from the environment and from flags.
    const env = issuesOf(() => loadConfig({ env: { AGORA_NETWORK_STUN_SERVERS: "x,y" } }));
    expect(env).toEqual([
      'env AGORA_NETWORK_STUN_SERVERS network.stun_servers: entry 1: expected host:port, got "x"',
      'env AGORA_NETWORK_STUN_SERVERS network.stun_servers: entry 2: expected host:port, got "y"',
    ]);
  });

  test("a port out of range, a bad IP and a bad peer id each get their own message", () => {
    const one = (addr: string) => issuesOf(() => loadConfig({ env: { AGORA_NETWORK_BOOTSTRAP_PEERS: addr } }))[0]!;
    expect(one(`/ip4/1.2.3.4/tcp/99999/p2p/${PEER}`)).toContain('tcp port "99999" is not in 1..65535');
    expect(one(`/ip4/1.2.3.4/tcp/0/p2p/${PEER}`)).toContain('tcp port "0" is not in 1..65535');
    expect(one(`/ip4/1.2.3.999/tcp/7001/p2p/${PEER}`)).toContain('"1.2.3.999" is not an IPv4 address');
    expect(one(`/ip6/zz::1/tcp/7001/p2p/${PEER}`)).toContain('"zz::1" is not an IPv6 address');
    expect(one("/ip4/1.2.3.4/tcp/7001/p2p/12D3KooWnotapeerid0OIl")).toContain('"12D3KooWnotapeerid0OIl" is not a valid peer id');
    for (const m of [
      one(`/ip4/1.2.3.4/tcp/99999/p2p/${PEER}`),
      one(`/ip4/1.2.3.999/tcp/7001/p2p/${PEER}`),
      one("/ip4/1.2.3.4/tcp/7001/p2p/12D3KooWnotapeerid0OIl"),
    ])
      expect(m).not.toContain("must end in /p2p/");
    expect(one("/ip4/1.2.3.4/tcp/7001")).toContain("must end in /p2p/<peer id>");
    expect(issuesOf(() => loadConfig({ env: { AGORA_NETWORK_ANNOUNCE_ADDRS: "/ip4/1.2.3.4/tcp/70010" } }))[0]).toContain(
      'tcp port "70010" is not in 1..65535',
    );
    // Good ones still pass.
    expect(
      loadConfig({
        env: {
          AGORA_NETWORK_BOOTSTRAP_PEERS: `/ip4/1.2.3.4/tcp/7001/p2p/${PEER},/dns4/boot.example.com/tcp/7001/p2p/${PEER}`,
          AGORA_NETWORK_ANNOUNCE_ADDRS: "/ip6/::1/tcp/7001",
        },
      }).config.network.bootstrap_peers,
    ).toHaveLength(2);
  });
});

describe("secrets and file modes", () => {
  test("an inline secret in a file every user can read is a warning naming the safer place", () => {
    const file = write('[dashboard]\nauth_token = "0123456789abcdef0123"\n[turn]\npassword = ""\n');
    chmodSync(file, 0o644);
    const w = loadConfig({ file, env: {} }).warnings.map((i) => `${i.source} ${i.path}: ${i.message}`);
    expect(w).toEqual([expect.stringContaining("node.toml:2 dashboard.auth_token: a secret in a file every user can read (mode 644)")]);
    chmodSync(file, 0o600);
    expect(loadConfig({ file, env: {} }).warnings).toEqual([]);
  });
});
