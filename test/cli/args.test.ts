import { describe, expect, test } from "bun:test";
import { main } from "../../src/cli";
import { parseCommand } from "../../src/cli/args";
import { AgoraError } from "../../src/errors";

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s), env: {} }, out, err };
}

describe("CLI parsing", () => {
  test("bare flags mean start; subcommands parse their own flags", () => {
    const p = parseCommand(["--config", "/etc/agora/node.toml"]);
    expect("command" in p && p.command.name).toBe("start");
    const d = parseCommand(["discover", "--bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/x", "--bootstrap", "/ip4/5.6.7.8/tcp/1/p2p/y", "--json"]);
    expect("values" in d && d.values.bootstrap).toEqual(["/ip4/1.2.3.4/tcp/1/p2p/x", "/ip4/5.6.7.8/tcp/1/p2p/y"]);
  });

  test("unknown commands and flags are usage errors naming them", () => {
    expect(() => parseCommand(["strat"])).toThrow('unknown command "strat" (did you mean "start"?)');
    expect(() => parseCommand(["start", "--listen-prot", "1"])).toThrow(AgoraError);
    expect(() => parseCommand(["start", "--listen-prot", "1"])).toThrow("--listen-prot");
    expect(() => parseCommand(["config"])).toThrow("missing argument");
  });

  test("exit codes: 0 ok, 2 usage/config error", async () => {
    let c = capture();
    expect(await main(["--version"], c.io)).toBe(0);
    expect(c.out[0]).toMatch(/^agora-node \d+\.\d+\.\d+/);
    c = capture();
    expect(await main(["--help"], c.io)).toBe(0);
    for (const name of ["start", "stop", "status", "config", "identity", "discover", "join", "loadgen", "health"])
      expect(c.out[0]).toContain(name);
    c = capture();
    expect(await main(["bogus"], c.io)).toBe(2);
    c = capture();
    expect(await main(["start", "--mode", "mixer"], c.io)).toBe(2);
    expect(c.err.join("\n")).toContain('--mode node.mode: expected one of dedicated | relay | bootstrap, got "mixer"');
    c = capture();
    expect(await main(["config", "validate", "/nonexistent.toml"], c.io)).toBe(2);
    expect(c.err.join("\n")).toContain("/nonexistent.toml: cannot read config: no such file");
  });

  test("every command has --help", async () => {
    for (const name of ["start", "stop", "status", "health", "config", "identity", "discover", "rooms", "join", "loadgen"]) {
      const c = capture();
      expect(await main([name, "--help"], c.io)).toBe(0);
      expect(c.out[0]).toContain(`usage: agora-node ${name}`);
    }
  });

  test("rooms: --bootstrap is required, --region must be a token, bad addresses are usage errors", async () => {
    let c = capture();
    expect(await main(["rooms"], c.io)).toBe(2);
    expect(c.err.join("\n")).toContain("rooms: --bootstrap MULTIADDR is required");
    c = capture();
    expect(
      await main(
        ["rooms", "--bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN", "--region", "EU West"],
        c.io,
      ),
    ).toBe(2);
    expect(c.err.join("\n")).toContain("--region: expected a lowercase token");
    c = capture();
    expect(await main(["rooms", "--bootstrap", "not-an-address"], c.io)).toBe(2);
    expect(c.err.join("\n")).toContain("rooms --bootstrap");
  });

  test("flag values are validated with the flag named", async () => {
    const c = capture();
    expect(
      await main(
        ["discover", "--bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN", "--limit", "0"],
        c.io,
      ),
    ).toBe(2);
    expect(c.err.join("\n")).toContain('--limit: expected an integer 1..100, got "0"');
    const d = capture();
    expect(await main(["join", "--room", "Bad Room", "--node", "/ip4/1.2.3.4/tcp/1"], d.io)).toBe(2);
    expect(d.err.join("\n")).toContain("join --room");
  });
});

describe("config show takes the flags start takes", () => {
  test("--mode, --set, --bootstrap and --data-dir change what config show prints, with the flag as origin", async () => {
    const c = capture();
    const code = await main(
      ["config", "show", "--mode", "relay", "--set", "audio.top_k_speakers=5", "--data-dir", "/tmp/agora-show", "--listen-port", "7100"],
      c.io,
    );
    expect(c.err).toEqual([]);
    expect(code).toBe(0);
    const text = c.out.join("\n");
    expect(text).toContain('mode = "relay"   # --mode');
    expect(text).toContain("top_k_speakers = 5   # --set");
    expect(text).toContain("listen_port = 7100   # --listen-port");
    expect(text).toContain('data_dir = "/tmp/agora-show"');
    const bad = capture();
    expect(await main(["config", "show", "--set", "audio.top_k_speakers=99"], bad.io)).toBe(2);
    expect(bad.err.join("\n")).toContain("--set audio.top_k_speakers: expected integer 1..16");
    const init = capture();
    expect(await main(["config", "validate", "x.toml", "--mode", "relay"], init.io)).toBe(2);
    expect(init.err.join("\n")).toContain("applies to config show");
  });
});

describe("CLI polish", () => {
  test("unknown commands get the closest command by edit distance", () => {
    expect(() => parseCommand(["statu"])).toThrow('unknown command "statu" (did you mean "status"?)');
    expect(() => parseCommand(["stpo"])).toThrow('(did you mean "stop"?)');
    expect(() => parseCommand(["helth"])).toThrow('(did you mean "health"?)');
    expect(() => parseCommand(["discvoer"])).toThrow('(did you mean "discover"?)');
    expect(() => parseCommand(["xyzzy"])).not.toThrow("did you mean");
  });

  test("stop and status list --data-dir in their help", async () => {
    for (const name of ["stop", "status"]) {
      const c = capture();
      expect(await main([name, "--help"], c.io)).toBe(0);
      expect(c.out[0]).toMatch(/^\s+--data-dir DIR\s+\S/m);
    }
  });
});
