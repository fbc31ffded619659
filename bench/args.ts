/**
 * Command-line flags of the bench scripts: `--name value`, with a default. A bad value ends the bench with
 * exit code 2 and a line naming the flag, what it takes and what it got.
 */

function usageError(message: string): never {
  console.error(message);
  process.exit(2);
}

/** The text after `--name`, if the flag is given. */
export function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** A number > 0 (≥ 0 with `allowZero`). */
export function positiveArg(name: string, def: number, allowZero = false): number {
  const text = flagValue(name);
  if (text === undefined) return def;
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || v < 0 || (v === 0 && !allowZero))
    usageError(`--${name}: expected a ${allowZero ? "non-negative" : "positive"} number, got ${JSON.stringify(text)}`);
  return v;
}

/** One of `choices`, the first by default. */
export function choiceArg<C extends string>(name: string, choices: readonly [C, ...C[]]): C {
  const v = flagValue(name) ?? choices[0];
  if (!choices.includes(v as C)) usageError(`--${name}: ${choices.join(" or ")}, got ${JSON.stringify(v)}`);
  return v as C;
}
