/**
 * One test host in a network namespace of its own, reached from the test's namespace over a private veth
 * pair with a /30 derived from the process id (so runs of other tests using test/helpers/netns.ts's shared
 * subnet, or another copy of this one, do not collide). nftables rules inside the namespace block UDP or
 * drop packets at random; the namespace (and so every rule) goes away at teardown.
 */
function sh(argv: string[], check = true): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (check && r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (${r.exitCode}): ${r.stderr.toString()}`);
  return r.stdout.toString();
}

export class PrivateHost {
  readonly ns: string;
  readonly hostIp: string;
  readonly ip: string;
  private readonly outer: string;
  private readonly inner: string;

  constructor(tag = "agv") {
    const pid = process.pid;
    this.ns = `${tag}${pid}`;
    this.outer = `${tag}${pid % 100000}o`;
    this.inner = `${tag}${pid % 100000}i`;
    const base = `10.214.${(pid >> 6) & 255}`;
    this.hostIp = `${base}.${((pid & 63) << 2) + 1}`;
    this.ip = `${base}.${((pid & 63) << 2) + 2}`;
  }

  setup(): void {
    this.teardown();
    sh(["ip", "netns", "add", this.ns]);
    sh(["ip", "link", "add", this.outer, "type", "veth", "peer", "name", this.inner]);
    sh(["ip", "link", "set", this.inner, "netns", this.ns]);
    sh(["ip", "addr", "add", `${this.hostIp}/30`, "dev", this.outer]);
    sh(["ip", "link", "set", this.outer, "up"]);
    sh(["ip", "-n", this.ns, "addr", "add", `${this.ip}/30`, "dev", this.inner]);
    sh(["ip", "-n", this.ns, "link", "set", this.inner, "up"]);
    sh(["ip", "-n", this.ns, "link", "set", "lo", "up"]);
  }

  /** Prefix that runs a command inside the namespace. */
  get exec(): string[] {
    return ["ip", "netns", "exec", this.ns];
  }

  nft(cmd: string): void {
    sh([...this.exec, "nft", cmd]);
  }

  /** Drops all UDP to and from `port` inside the namespace. */
  blockUdp(port: number): void {
    this.nft("add table inet agora_udp_block");
    this.nft("add chain inet agora_udp_block input { type filter hook input priority 0; }");
    this.nft("add chain inet agora_udp_block output { type filter hook output priority 0; }");
    this.nft(`add rule inet agora_udp_block input udp dport ${port} drop`);
    this.nft(`add rule inet agora_udp_block output udp sport ${port} drop`);
  }

  unblockUdp(): void {
    sh([...this.exec, "nft", "delete table inet agora_udp_block"], false);
  }

  /** Random loss of `percent` % of every packet in and out of the namespace (nftables numgen; no netem here). */
  loss(percent: number): void {
    this.nft("add table inet agora_loss");
    for (const hook of ["input", "output"]) {
      this.nft(`add chain inet agora_loss ${hook} { type filter hook ${hook} priority 0; }`);
      this.nft(`add rule inet agora_loss ${hook} iifname != "lo" oifname != "lo" numgen random mod 100 < ${percent} counter drop`);
    }
  }

  /** Packets the loss rules dropped so far (proves the shaping took effect). */
  lossDrops(): number {
    const out = sh([...this.exec, "nft", "list", "table", "inet", "agora_loss"], false);
    return [...out.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  }

  clearLoss(): void {
    sh([...this.exec, "nft", "delete table inet agora_loss"], false);
  }

  teardown(): void {
    sh(["ip", "link", "del", this.outer], false);
    sh(["ip", "netns", "del", this.ns], false);
  }
}
