/**
 * AgoraConfig is computed from SCHEMA (src/config/schema.ts), not written beside it. These checks run in the
 * type-check step of the test command: each @ts-expect-error line fails the build if it stops being an error.
 */
import { expect, test } from "bun:test";
import { type AgoraConfig, defaultConfig, NODE_MODES, SCHEMA } from "../../src/config";

test("every schema key is a field of the derived type, with the value type its KeyType says", () => {
  const c: AgoraConfig = defaultConfig();
  const mode: "dedicated" | "relay" | "bootstrap" = c.node.mode;
  const port: number = c.node.listen_port;
  const peers: string[] = c.network.bootstrap_peers;
  const upnp: boolean = c.network.enable_upnp;
  const level: "trace" | "debug" | "info" | "warn" | "error" | "fatal" = c.logging.level;
  // @ts-expect-error a key that is not in SCHEMA is not in the type
  void c.node.no_such_key;
  // @ts-expect-error an enum key takes only its values
  c.node.mode = "mixer";
  // @ts-expect-error an integer key is a number
  c.node.listen_port = "7001";
  expect(NODE_MODES).toContain(mode);
  expect([port, peers, upnp, level]).toEqual([7001, [], false, "info"]);
  // At run time the default config has exactly the schema's keys.
  const keys = Object.entries(c).flatMap(([section, o]) => Object.keys(o).map((k) => `${section}.${k}`));
  expect(keys.sort()).toEqual(SCHEMA.map((s) => `${s.section}.${s.key}`).sort());
});
