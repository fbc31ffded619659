/** checkOpusPacket: RFC 6716 §3.2 framing (R1–R7) and the 20 ms rule of protocol v1, with byte vectors. */
import { describe, expect, test } from "bun:test";
import { createOpusCodec } from "../../src/audio";
import { checkOpusPacket } from "../../src/protocol";

const p = (...bytes: number[]) => Uint8Array.from(bytes);
const toc = (config: number, stereo: 0 | 1, code: 0 | 1 | 2 | 3) => (config << 3) | (stereo << 2) | code;

describe("well-formed 20 ms packets pass", () => {
  test.each([
    ["CELT FB 20 ms, code 0", p(toc(31, 0, 0), 1, 2, 3)],
    ["SILK WB 20 ms stereo, code 0", p(toc(9, 1, 0), 1)],
    ["Hybrid FB 20 ms, code 0 (DTX: empty frame)", p(toc(15, 0, 0))],
    ["CELT 2 × 10 ms CBR, code 1", p(toc(30, 0, 1), 1, 2, 3, 4)],
    ["SILK 2 × 10 ms VBR, code 2 (first frame 1 byte)", p(toc(0, 0, 2), 1, 0xaa, 0xbb, 0xcc)],
    ["CELT 4 × 5 ms CBR, code 3", p(toc(29, 0, 3), 4, 1, 2, 3, 4, 5, 6, 7, 8)],
    [
      "CELT 8 × 2.5 ms VBR with padding, code 3",
      p(toc(28, 0, 3), 0x80 | 0x40 | 8, 2, 1, 1, 1, 1, 1, 1, 1, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ],
  ])("%s", (_name, packet) => {
    expect(checkOpusPacket(packet)).toBeUndefined();
  });

  test("what the real encoder produces passes", async () => {
    const codec = await createOpusCodec();
    const enc = codec.encoder(32_000);
    const pcm = Int16Array.from({ length: 960 }, (_, i) => Math.round(8000 * Math.sin(i / 10)));
    for (let i = 0; i < 5; i++) expect(checkOpusPacket(enc.encode(pcm))).toBeUndefined();
    enc.destroy();
  });
});

describe("malformed or not 20 ms: refused with the reason", () => {
  test.each([
    ["empty", p(), /empty/],
    ["10 ms frame (SILK NB 10 ms, code 0)", p(toc(0, 0, 0), 1), /10 ms/],
    ["40 ms (2 × 20 ms, code 1)", p(toc(31, 0, 1), 1, 2), /40 ms/],
    ["code 1 with an odd byte count (R3)", p(toc(30, 0, 1), 1, 2, 3), /R3/],
    ["code 2 whose first frame is longer than the packet (R4)", p(toc(30, 0, 2), 200, 1, 2), /R4/],
    ["code 2 with a truncated 2-byte length (R4)", p(toc(30, 0, 2), 252), /R4/],
    ["code 3 without a frame count byte", p(toc(29, 0, 3)), /frame count/],
    ["code 3 with 0 frames (R5)", p(toc(29, 0, 3), 0), /R5/],
    ["code 3 longer than 120 ms (R5)", p(toc(3, 0, 3), 3, 1, 2, 3), /120 ms/],
    ["code 3 CBR not divisible (R6)", p(toc(29, 0, 3), 4, 1, 2, 3), /R6/],
    ["code 3 padding beyond the packet", p(toc(29, 0, 3), 0x40 | 4, 200, 1, 2, 3, 4), /padding/],
    ["code 3 VBR lengths beyond the packet (R7)", p(toc(29, 0, 3), 0x80 | 4, 50, 50, 50, 1), /R7/],
  ])("%s", (_name, packet, why) => {
    expect(checkOpusPacket(packet)).toMatch(why);
  });
});
