/** `agora-node version [--json]`: what this executable is, for bug reports and release checks. */
import { libopusVersion } from "../audio";
import { errorMessage } from "../errors";
import { BUILD_COMMIT, VERSION } from "../version";
import { EXIT_FAILURE, EXIT_OK, type Parsed } from "./args";
import type { Io } from "./context";

export interface VersionInfo {
  version: string;
  /** git commit of the build ("…-dirty" with local changes), "unknown" when not built from git */
  commit: string;
  /** release target name: linux-x64, linux-arm64, darwin-x64, darwin-arm64, windows-x64 */
  target: string;
  bun: string;
  /** version of the libopus inside the embedded wasm core, "unavailable" when the core cannot load */
  libopus: string;
}

/** The release target name of a platform/arch pair (Node's win32 is "windows", as in the archive names). */
export function releaseTarget(platform: string = process.platform, arch: string = process.arch): string {
  return `${platform === "win32" ? "windows" : platform}-${arch}`;
}

export async function versionInfo(): Promise<{ info: VersionInfo; problem?: string }> {
  let libopus = "unavailable";
  let problem: string | undefined;
  try {
    libopus = await libopusVersion();
  } catch (err) {
    problem = `cannot load the media core to read its libopus version: ${errorMessage(err)}`;
  }
  return { info: { version: VERSION, commit: BUILD_COMMIT, target: releaseTarget(), bun: Bun.version, libopus }, problem };
}

export async function runVersion(p: Parsed, io: Io): Promise<number> {
  const { info, problem } = await versionInfo();
  if (p.values.json) io.out(JSON.stringify(info));
  else
    io.out(
      `agora-node ${info.version} (commit ${info.commit.slice(0, 12)}${info.commit.endsWith("-dirty") ? "-dirty" : ""}, ${info.target}, bun ${info.bun}, libopus ${info.libopus})`,
    );
  if (problem) io.err(`agora-node: ${problem}`);
  return problem ? EXIT_FAILURE : EXIT_OK;
}
