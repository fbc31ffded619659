#!/usr/bin/env bash
# Builds what is missing, then runs the node on the embedded default config (no file needed).
# Extra arguments go to `agora-node start`, e.g. scripts/run-node.sh --mode relay --config node.toml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./dist/agora-node start "$@"
