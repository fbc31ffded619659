/**
 * The release version. Kept as a constant rather than imported from package.json: a JSON import is not
 * inlined when the executable is compiled with a second (worker) entry point. test/cli/version.test.ts
 * keeps the two equal.
 */
export const VERSION = "0.1.0";
