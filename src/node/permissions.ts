/**
 * File permissions across OSes. The node restricts its data directory (0700), identity key (0600) and PID
 * file (0644) with POSIX modes. Windows has no such modes (ACLs instead; chmod only toggles read-only), and
 * some POSIX file systems (FAT, some network mounts) ignore chmod: there the node still runs, and says so.
 */

/** Whether `platform` applies POSIX permission bits at all. */
export function hasPosixModes(platform: NodeJS.Platform = process.platform): boolean {
  return platform !== "win32";
}

/** The warning for a file or directory that could not be restricted to `mode`. */
export function unrestrictedWarning(what: string, path: string, mode: number, platform: NodeJS.Platform = process.platform): string {
  return hasPosixModes(platform)
    ? `${what} ${path} could not be restricted to mode ${mode.toString(8)} (the file system ignores POSIX modes); keep it on a file system that has them, or restrict who can read it another way`
    : `${what} ${path} is not restricted to mode ${mode.toString(8)}: ${platform} has no POSIX file modes, so it inherits the ACL of its folder; restrict that folder to the node's account (icacls "<folder>" /inheritance:r /grant:r "%USERNAME%:(OI)(CI)F")`;
}
