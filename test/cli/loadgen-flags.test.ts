import { expect, test } from "bun:test";
import { main } from "../../src/cli";

const NODE = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

async function run(args: string[]): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  const code = await main(["loadgen", "--node", NODE, ...args], { out: () => {}, err: (s: string) => void err.push(s), env: {} });
  return { code, err: err.join("\n") };
}

test("loadgen: --connections, --local-address, --talkers and --join-interval are validated, naming the flag", async () => {
  expect(await run(["--connections", "many"])).toEqual({
    code: 2,
    err: expect.stringContaining('--connections: expected shared or per-participant, got "many"'),
  });
  expect(await run(["--local-address", "127.0.0"])).toEqual({
    code: 2,
    err: expect.stringContaining('--local-address: expected an IP address like 127.0.0.2, got "127.0.0"'),
  });
  expect(await run(["--talkers", "-1"])).toEqual({ code: 2, err: expect.stringContaining("--talkers") });
  expect(await run(["--join-interval", "x"])).toEqual({ code: 2, err: expect.stringContaining("--join-interval") });
});

test("loadgen --help lists the new flags", async () => {
  const out: string[] = [];
  expect(await main(["loadgen", "--help"], { out: (s: string) => void out.push(s), err: () => {}, env: {} })).toBe(0);
  for (const f of ["--connections", "--talkers", "--silent", "--local-address", "--join-interval"]) expect(out.join("\n")).toContain(f);
});
