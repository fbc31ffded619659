import { expect, test } from "bun:test";
import { embeddedRoot } from "../../src/audio/engine";

test("the embedded-file root of a compiled executable is found on every OS", () => {
  expect(embeddedRoot("file:///$bunfs/root/main.js")).toBe("/$bunfs/root");
  // Windows executables embed under B:/~BUN/root (import.meta.url and path forms).
  expect(embeddedRoot("file:///B:/~BUN/root/main.js")).toBe("B:/~BUN/root");
  expect(embeddedRoot("B:\\~BUN\\root\\main.js")).toBe("B:/~BUN/root");
  expect(embeddedRoot("file:///home/ana/agora-node/src/audio/engine.ts")).toBeUndefined();
  expect(embeddedRoot("file:///C:/Users/ana/agora-node/src/audio/engine.ts")).toBeUndefined();
});
