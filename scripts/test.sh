#!/usr/bin/env bash
# Installs what the tests need, builds the binary, runs the whole suite (unit + integration against the
# compiled binary), and ends with one plain summary line "tests: N passed, N failed".
# Extra arguments go to `bun test` (e.g. a path filter).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
BUN="$PWD/.tools/node_modules/@oven/bun-linux-x64/bin/bun"
export PATH="$(dirname "$BUN"):$PATH"
mkdir -p test-output
"$BUN" x tsc --noEmit -p . || { echo "tests: 0 passed, 1 failed (typecheck)"; exit 1; }
# Structure: no import circles between files (madge) or between subsystems, and other subsystems reached only
# through their index.ts (scripts/check-layers.ts).
"$BUN" x madge --circular --no-spinner --extensions ts --ts-config tsconfig.json src || { echo "tests: 0 passed, 1 failed (import circles)"; exit 1; }
"$BUN" scripts/check-layers.ts || { echo "tests: 0 passed, 1 failed (subsystem layering)"; exit 1; }
# Lint and format (biome.jsonc); `biome check --write .` fixes what it can.
"$BUN" x biome ci --colors=off . || { echo "tests: 0 passed, 1 failed (biome: lint or format)"; exit 1; }
"$BUN" test --timeout 60000 "$@" 2>&1 | tee test-output/bun-test.log
status=${PIPESTATUS[0]}
pass=$(grep -Eo '^ *[0-9]+ pass' test-output/bun-test.log | tail -1 | grep -Eo '[0-9]+' || echo 0)
fail=$(grep -Eo '^ *[0-9]+ fail' test-output/bun-test.log | tail -1 | grep -Eo '[0-9]+' || echo 0)
[ "$pass" = 0 ] && [ "$status" = 0 ] && { echo "tests: 0 passed, 1 failed (no test ran)"; exit 1; }
echo "tests: ${pass} passed, ${fail} failed"
exit "$status"
