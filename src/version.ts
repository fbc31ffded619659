/**
 * The release version. Kept as a constant rather than imported from package.json: a JSON import is not
 * inlined when the executable is compiled with a second (worker) entry point. test/cli/version.test.ts
 * keeps the two equal.
 */
export const VERSION = "0.1.0";

/** Replaced by a string literal at compile time (`--define`, scripts/lib/compile.ts); undeclared from source. */
declare const AGORA_BUILD_COMMIT: string | undefined;

/** The git commit the executable was built from ("…-dirty" with local changes), "unknown" when not built from git. */
export const BUILD_COMMIT: string = typeof AGORA_BUILD_COMMIT === "string" && AGORA_BUILD_COMMIT !== "" ? AGORA_BUILD_COMMIT : "unknown";
