/** Tools the test setup installs (scripts/setup.sh --test): a missing one fails the test that needs it. */

/** Path of `name`; throws, naming the apt package, when it is not installed (never a silent skip). */
export function requireTool(name: string, aptPackage: string): string {
  const path = Bun.which(name);
  if (!path) throw new Error(`${name} is not installed: run scripts/setup.sh --test (it installs the ${aptPackage} package)`);
  return path;
}
