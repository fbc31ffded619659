/**
 * Test hosts in network namespaces: one namespace per host, all on one bridge (in its own namespace), plus
 * a veth from the test's own namespace so the test can reach every host. Links can be cut (partition) and
 * given random loss (nftables). Delay would need tc netem, which this kernel does not ship (sch_netem).
 * Every name carries a per-run prefix, and teardown removes everything the network created.
 */
const SUBNET = "10.213.77";

function sh(argv: string[], check = true): { code: number; out: string } {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString() + r.stderr.toString();
  if (check && r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (${r.exitCode}): ${out}`);
  return { code: r.exitCode, out };
}

/** True when this process may create namespaces (root with iproute2). */
export function netnsAvailable(): boolean {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return false;
  const probe = `agprobe${process.pid}`;
  if (sh(["ip", "netns", "add", probe], false).code !== 0) return false;
  sh(["ip", "netns", "del", probe], false);
  return true;
}

export interface TestHost {
  name: string;
  ns: string;
  ip: string;
  /** the host's end of the link, on the bridge */
  bridgePort: string;
}

export class TestNetwork {
  private readonly tag: string;
  private readonly bridgeNs: string;
  readonly hosts = new Map<string, TestHost>();
  readonly testIp: string;
  private readonly subnet: string;
  private set = false;

  /**
   * `tag` and `subnet` (three octets) keep two tests' networks apart when they run at the same time: names
   * carry the tag, and the test's own leg has an address of the subnet.
   */
  constructor(opts: { tag?: string; subnet?: string } = {}) {
    this.subnet = opts.subnet ?? SUBNET;
    this.tag = opts.tag ?? `ag${(process.pid % 10000).toString(36)}`;
    this.bridgeNs = `${this.tag}-br`;
    this.testIp = `${this.subnet}.254`;
  }

  setup(names: string[]): void {
    this.teardown();
    sh(["ip", "netns", "add", this.bridgeNs]);
    this.set = true;
    sh(["ip", "-n", this.bridgeNs, "link", "add", "br0", "type", "bridge"]);
    sh(["ip", "-n", this.bridgeNs, "link", "set", "br0", "up"]);
    names.forEach((name, i) => {
      const ns = `${this.tag}-${name}`;
      const inner = `${this.tag}h${i}`;
      const port = `${this.tag}p${i}`;
      const ip = `${this.subnet}.${i + 1}`;
      sh(["ip", "netns", "add", ns]);
      sh(["ip", "link", "add", inner, "type", "veth", "peer", "name", port]);
      sh(["ip", "link", "set", inner, "netns", ns]);
      sh(["ip", "link", "set", port, "netns", this.bridgeNs]);
      sh(["ip", "-n", this.bridgeNs, "link", "set", port, "master", "br0", "up"]);
      sh(["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", inner]);
      sh(["ip", "-n", ns, "link", "set", inner, "up"]);
      sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      this.hosts.set(name, { name, ns, ip, bridgePort: port });
    });
    // The test process's own leg onto the bridge.
    const mine = `${this.tag}t`;
    const port = `${this.tag}tp`;
    sh(["ip", "link", "add", mine, "type", "veth", "peer", "name", port]);
    sh(["ip", "link", "set", port, "netns", this.bridgeNs]);
    sh(["ip", "-n", this.bridgeNs, "link", "set", port, "master", "br0", "up"]);
    sh(["ip", "addr", "add", `${this.testIp}/24`, "dev", mine]);
    sh(["ip", "link", "set", mine, "up"]);
  }

  host(name: string): TestHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no test host ${name}`);
    return h;
  }

  /** Prefix that runs a command inside a host's namespace. */
  exec(name: string): string[] {
    return ["ip", "netns", "exec", this.host(name).ns];
  }

  /** Partition: the host loses its link to the bridge (and so to everyone). */
  cut(name: string): void {
    sh(["ip", "-n", this.bridgeNs, "link", "set", this.host(name).bridgePort, "down"]);
  }

  heal(name: string): void {
    sh(["ip", "-n", this.bridgeNs, "link", "set", this.host(name).bridgePort, "up"]);
  }

  /**
   * Partition between hosts: `name` drops every packet to and from the `others` (nftables in its namespace),
   * while both still reach the test's leg (so the test keeps watching both sides).
   */
  separate(name: string, others: string[]): void {
    const ns = this.host(name).ns;
    const ips = others.map((o) => this.host(o).ip).join(", ");
    sh(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "agora_partition"]);
    sh(["ip", "netns", "exec", ns, "nft", "add chain inet agora_partition input { type filter hook input priority 0; }"]);
    sh(["ip", "netns", "exec", ns, "nft", "add chain inet agora_partition output { type filter hook output priority 0; }"]);
    sh(["ip", "netns", "exec", ns, "nft", `add rule inet agora_partition input ip saddr { ${ips} } counter drop`]);
    sh(["ip", "netns", "exec", ns, "nft", `add rule inet agora_partition output ip daddr { ${ips} } counter drop`]);
  }

  /** Packets the partition rules of a host have dropped so far (proves the partition was real). */
  separationDrops(name: string): number {
    const out = sh(["ip", "netns", "exec", this.host(name).ns, "nft", "list", "table", "inet", "agora_partition"], false).out;
    return [...out.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  }

  /** The heal: the partition rules of `name` are gone. */
  rejoin(name: string): void {
    sh(["ip", "netns", "exec", this.host(name).ns, "nft", "delete", "table", "inet", "agora_partition"], false);
  }

  /** Random loss of `percent` % of the host's packets, both directions (nftables numgen). */
  loss(name: string, percent: number): void {
    const ns = this.host(name).ns;
    sh(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "agora_loss"]);
    for (const hook of ["input", "output"]) {
      sh(["ip", "netns", "exec", ns, "nft", `add chain inet agora_loss ${hook} { type filter hook ${hook} priority 0; }`]);
      sh(["ip", "netns", "exec", ns, "nft", `add rule inet agora_loss ${hook} numgen random mod 100 < ${percent} counter drop`]);
    }
  }

  /** Packets the loss rules of a host have dropped so far (proves the shaping took effect). */
  lossDrops(name: string): number {
    const out = sh(["ip", "netns", "exec", this.host(name).ns, "nft", "list", "table", "inet", "agora_loss"], false).out;
    return [...out.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  }

  clearLoss(name: string): void {
    sh(["ip", "netns", "exec", this.host(name).ns, "nft", "delete", "table", "inet", "agora_loss"], false);
  }

  teardown(): void {
    sh(["ip", "link", "del", `${this.tag}t`], false);
    for (const h of this.hosts.values()) sh(["ip", "netns", "del", h.ns], false);
    if (this.set) sh(["ip", "netns", "del", this.bridgeNs], false);
    // Namespaces of an earlier, killed run with the same tag.
    for (const line of sh(["ip", "netns", "list"], false).out.split("\n")) {
      const ns = line.split(" ")[0];
      if (ns?.startsWith(`${this.tag}-`)) sh(["ip", "netns", "del", ns], false);
    }
    this.hosts.clear();
    this.set = false;
  }
}
