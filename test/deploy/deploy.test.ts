/**
 * Deployment artefacts, checked without a Docker engine: the Dockerfile's structure, the binary running in
 * a root file system that holds only itself and the glibc libraries it links (as on distroless), the
 * systemd unit (systemd-analyze verify + security), compose/Prometheus/Grafana consistency, and the
 * Grafana dashboard querying only metrics a live node exports.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { envName, SCHEMA } from "../../src/config";
import { BINARY, ensureBinary, freePort, type NodeHandle, ROOT, runCli, startNode, tempDir } from "../helpers/node-process";

const read = (p: string) => readFileSync(join(ROOT, p), "utf8");

interface Instruction {
  op: string;
  args: string;
}

function parseDockerfile(text: string): Instruction[] {
  const joined = text.replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const m = /^(\w+)\s+(.*)$/.exec(l)!;
      return { op: m[1]!.toUpperCase(), args: m[2]! };
    });
}

describe("Dockerfile", () => {
  const ins = parseDockerfile(read("Dockerfile"));
  const froms = ins.map((i, idx) => ({ ...i, idx })).filter((i) => i.op === "FROM");
  const final = ins.slice(froms[froms.length - 1]!.idx);

  test("is multi-stage: a build stage from source, a distroless glibc final stage", () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(froms[0]!.args).toMatch(/^debian:bookworm\S* AS build$/);
    expect(froms[froms.length - 1]!.args).toBe("gcr.io/distroless/cc-debian12:nonroot");
    const buildRuns = ins
      .slice(0, froms[1]!.idx)
      .filter((i) => i.op === "RUN")
      .map((i) => i.args)
      .join("\n");
    expect(buildRuns).toContain("emscripten");
    expect(buildRuns).toContain("@oven/bun-linux-x64@1.4.5");
    expect(buildRuns).toContain("scripts/build.ts");
  });

  test("final stage: non-root user, config, data volume, ports, exec-form healthcheck without shell", () => {
    const user = final.find((i) => i.op === "USER")!.args;
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(final.find((i) => i.op === "VOLUME")!.args).toContain("/var/lib/agora");
    expect(final.find((i) => i.op === "EXPOSE")!.args.split(/\s+/)).toEqual(["7001/tcp", "8080/tcp", "9090/tcp"]);
    const hc = final.find((i) => i.op === "HEALTHCHECK")!.args;
    const cmd = JSON.parse(hc.slice(hc.indexOf("CMD") + 3).trim()) as string[];
    expect(cmd[0]).toBe("/usr/local/bin/agora-node");
    expect(cmd[1]).toBe("health");
    expect(JSON.parse(final.find((i) => i.op === "ENTRYPOINT")!.args)).toEqual(["/usr/local/bin/agora-node"]);
    expect(JSON.parse(final.find((i) => i.op === "CMD")!.args)).toEqual(["start", "--config", "/etc/agora/node.toml"]);
    expect(final.filter((i) => i.op === "RUN")).toEqual([]); // distroless has no shell to run anything with
  });

  test("every ENV setting is a real config variable, and COPY sources exist and are not docker-ignored", () => {
    const envs = final.filter((i) => i.op === "ENV").flatMap((i) => i.args.split(/\s+/).map((kv) => kv.split("=")[0]!));
    const known = new Set(SCHEMA.map((s) => envName(`${s.section}.${s.key}`)));
    for (const e of envs) expect(known.has(e)).toBe(true);
    const ignored = read(".dockerignore").split("\n").filter(Boolean);
    for (const c of ins.filter((i) => i.op === "COPY" && !i.args.startsWith("--from"))) {
      const parts = c.args.split(/\s+/);
      for (const src of parts.slice(0, -1)) {
        expect(existsSync(join(ROOT, src))).toBe(true);
        expect(ignored).not.toContain(src);
      }
    }
  });
});

describe("distroless stand-in: a root fs with only the binary and glibc", () => {
  const rootfs = tempDir("agora-rootfs-");
  afterAll(() => {
    Bun.spawnSync(["umount", "-l", join(rootfs, "proc")]);
  });

  test("the binary runs there as nonroot, serves /health and stops cleanly", async () => {
    ensureBinary();
    chmodSync(rootfs, 0o755); // mkdtemp makes it 0700; the nonroot user must traverse it
    const ldd = Bun.spawnSync(["ldd", BINARY]).stdout.toString();
    const libs = [...ldd.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
    expect(libs.every((l) => /\/(libc|libm|libdl|libpthread|ld-linux-x86-64)\.so/.test(l))).toBe(true);
    for (const lib of libs) {
      mkdirSync(join(rootfs, dirname(lib)), { recursive: true });
      copyFileSync(lib, join(rootfs, lib));
    }
    mkdirSync(join(rootfs, "usr/local/bin"), { recursive: true });
    copyFileSync(BINARY, join(rootfs, "usr/local/bin/agora-node"));
    chmodSync(join(rootfs, "usr/local/bin/agora-node"), 0o755);
    for (const d of ["proc", "tmp", "dev", "var/lib/agora", "etc/agora"]) mkdirSync(join(rootfs, d), { recursive: true });
    chmodSync(join(rootfs, "tmp"), 0o1777);
    Bun.spawnSync(["chown", "65532:65532", join(rootfs, "var/lib/agora")]);
    for (const [name, minor] of [
      ["null", 3],
      ["zero", 5],
      ["random", 8],
      ["urandom", 9],
    ] as const)
      Bun.spawnSync(["mknod", "-m", "666", join(rootfs, "dev", name), "c", "1", String(minor)]);
    copyFileSync(join(ROOT, "config/node.toml"), join(rootfs, "etc/agora/node.toml"));
    const files = Bun.spawnSync(["find", rootfs, "-type", "f"]).stdout.toString().trim().split("\n");
    expect(files.length).toBe(libs.length + 2);

    const [p2p, dash, met] = [await freePort(), await freePort(), await freePort()];
    const proc = Bun.spawn(
      [
        "unshare",
        "--mount",
        `--mount-proc=${join(rootfs, "proc")}`,
        "chroot",
        "--userspec=65532:65532",
        rootfs,
        "/usr/local/bin/agora-node",
        "start",
        "--config",
        "/etc/agora/node.toml",
        "--data-dir",
        "/var/lib/agora",
        "--listen-addr",
        "127.0.0.1",
        "--listen-port",
        String(p2p),
        "--dashboard-port",
        String(dash),
        "--metrics-port",
        String(met),
      ],
      { stdout: "pipe", stderr: "pipe", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } },
    );
    let ok = false;
    for (let i = 0; i < 200 && !ok; i++) {
      await Bun.sleep(100);
      ok = await fetch(`http://127.0.0.1:${dash}/health`).then(
        (r) => r.status === 200,
        () => false,
      );
    }
    const status = ok ? ((await (await fetch(`http://127.0.0.1:${dash}/api/status`)).json()) as { mode: string }) : undefined;
    proc.kill("SIGTERM");
    const code = await proc.exited;
    const out = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
    expect(ok ? "healthy" : out).toBe("healthy");
    expect(status!.mode).toBe("dedicated");
    expect(code).toBe(0);
    expect(existsSync(join(rootfs, "var/lib/agora/identity.key"))).toBe(true);
  }, 60_000);
});

describe("systemd unit", () => {
  const unit = read("systemd/agora-node.service");
  const value = (k: string) => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, "gm"))].map((m) => m[1]!);

  test("systemd-analyze verify is clean", () => {
    const dir = tempDir();
    const copy = join(dir, "agora-node.service");
    writeFileSync(copy, unit.replaceAll("/usr/local/bin/agora-node", ensureBinary()));
    const r = Bun.spawnSync(["systemd-analyze", "verify", copy]);
    expect(r.stderr.toString().trim()).toBe("");
    expect(r.exitCode).toBe(0);
  });

  test("systemd-analyze security rates it OK or better", () => {
    const dir = tempDir();
    const copy = join(dir, "agora-node.service");
    writeFileSync(copy, unit);
    const r = Bun.spawnSync(["systemd-analyze", "security", "--offline=true", copy]);
    const m = /Overall exposure level for agora-node\.service: ([\d.]+) (\w+)/.exec(r.stdout.toString());
    expect(m).not.toBeNull();
    expect(["OK", "SAFE"]).toContain(m![2]!);
    expect(Number(m![1])).toBeLessThan(2);
  });

  test("reload is SIGHUP, stop outlasts the drain, restart on failure, dynamic user with state dirs", () => {
    const drainDefault = SCHEMA.find((s) => s.section === "node" && s.key === "drain_timeout")!.default as number;
    expect(Number(value("TimeoutStopSec")[0])).toBeGreaterThan(drainDefault + 10);
    expect(value("ExecReload")[0]).toBe("/bin/kill -HUP $MAINPID");
    expect(value("Restart")[0]).toBe("on-failure");
    expect(value("DynamicUser")[0]).toBe("yes");
    for (const k of ["StateDirectory", "LogsDirectory", "ConfigurationDirectory"]) expect(value(k)[0]).toBe("agora");
    expect(value("Environment")).toContain("AGORA_NODE_DATA_DIR=/var/lib/agora");
  });

  test("notify type with a watchdog; a config error (exit 2) is not restarted", () => {
    expect(value("Type")[0]).toBe("notify");
    expect(value("NotifyAccess")[0]).toBe("main");
    expect(value("WatchdogSec")[0]).toMatch(/^\d+s$/);
    expect(value("RestartPreventExitStatus")[0]).toBe("2");
    expect(value("ExecStart")[0]).toBe("/usr/local/bin/agora-node start --config /etc/agora/node.toml");
  });

  test("the documented install: the config `config init` writes is readable by an unprivileged (dynamic) user", async () => {
    const dir = tempDir();
    chmodSync(dir, 0o755);
    const file = join(dir, "node.toml");
    const init = await runCli(["config", "init", file]);
    expect(init.code).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o644);
    // As DynamicUser would run it: an unused uid and gid, no supplementary groups.
    const asService = (args: string[]) =>
      Bun.spawnSync(["setpriv", "--reuid=61999", "--regid=61999", "--clear-groups", BINARY, ...args], {
        env: { PATH: "/usr/bin:/bin", HOME: "/nonexistent" },
      });
    const ok = asService(["config", "validate", file]);
    expect(ok.stderr.toString()).toBe("");
    expect(ok.exitCode).toBe(0);
    // A config the service cannot read: exit 2 (RestartPreventExitStatus) with what to do.
    chmodSync(file, 0o640);
    const denied = asService(["start", "--config", file]);
    expect(denied.exitCode).toBe(2);
    expect(denied.stderr.toString()).toContain("permission denied: the node runs as uid 61999 and must be able to read it (chmod 644");
  });
});

describe("compose, Prometheus and Grafana", () => {
  const compose = Bun.YAML.parse(read("deploy/compose.yml")) as { services: Record<string, any> };
  const nodes = Object.entries(compose.services).filter(([, s]) => s.image === "agora/node:latest");

  test("three nodes: one bootstrap, two dedicated in two regions, bootstrapping through the first", () => {
    expect(nodes.map(([n]) => n)).toEqual(["bootstrap", "mixer-eu", "mixer-us"]);
    expect(compose.services.bootstrap.command).toContain("bootstrap");
    const regions = nodes.slice(1).map(([, s]) => s.environment.AGORA_NODE_REGION);
    expect(new Set(regions).size).toBe(2);
    for (const [, s] of nodes.slice(1))
      expect(s.environment.AGORA_NETWORK_BOOTSTRAP_PEERS).toStartWith("/dns4/bootstrap/tcp/7001/p2p/${BOOTSTRAP_PEER_ID");
    const known = new Set(SCHEMA.map((s) => envName(`${s.section}.${s.key}`)));
    for (const [, s] of nodes) for (const k of Object.keys(s.environment ?? {})) expect(known.has(k)).toBe(true);
  });

  test("Prometheus scrapes every node on the metrics port", () => {
    const prom = Bun.YAML.parse(read("deploy/prometheus/prometheus.yml")) as {
      scrape_configs: { static_configs: { targets: string[] }[] }[];
    };
    const targets = prom.scrape_configs.flatMap((c) => c.static_configs.flatMap((s) => s.targets));
    expect(targets.sort()).toEqual(nodes.map(([n]) => `${n}:9090`).sort());
  });

  describe("the Grafana dashboard queries only metrics the binary exports", () => {
    const live: NodeHandle[] = [];
    afterAll(() => {
      for (const h of live) h.cleanup();
    });

    test("every metric in every panel exists on a live node of some mode", async () => {
      const dash = JSON.parse(read("deploy/grafana/dashboards/agora-node.json")) as {
        panels: { title: string; targets: { expr: string }[] }[];
      };
      const exported = new Set<string>();
      for (const mode of ["dedicated", "relay", "bootstrap"]) {
        const h = await startNode({ args: ["--mode", mode] });
        live.push(h);
        const text = await (await fetch(h.metricsUrl)).text();
        for (const m of text.matchAll(/^# TYPE (\S+) (\S+)/gm)) {
          exported.add(m[1]!);
          if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) exported.add(`${m[1]}${s}`);
        }
        await h.stop();
      }
      const PROMQL = new Set(["sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max", "min", "count"]);
      const used: string[] = [];
      for (const p of dash.panels)
        for (const t of p.targets) {
          const stripped = t.expr
            .replace(/\{[^}]*\}/g, "")
            .replace(/\[[^\]]*\]/g, "")
            .replace(/"[^"]*"/g, "");
          for (const m of stripped.matchAll(/[a-z_][a-z0-9_]*/g))
            if (!PROMQL.has(m[0]) && !/^\d/.test(m[0]) && !["node", "type", "direction", "reason", "instance"].includes(m[0]))
              used.push(m[0]);
        }
      expect(used.length).toBeGreaterThan(15);
      // `up` is written by Prometheus itself for every scrape target.
      const missing = [...new Set(used)].filter((m) => m !== "up" && !exported.has(m));
      expect(missing).toEqual([]);
    }, 90_000);
  });
});
