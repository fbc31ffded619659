#!/usr/bin/env bash
# Prepares deploy/compose.yml: a bootstrap identity (its PeerId goes into .env for the other nodes'
# bootstrap_peers), a dashboard admin token, both readable by the container's nonroot user (65532).
# Nothing secret is committed: deploy/secrets/ and deploy/.env are generated here.
set -euo pipefail
cd "$(dirname "$0")"
BIN=${AGORA_NODE_BIN:-../dist/agora-node}
[ -x "$BIN" ] || { echo "init: $BIN is missing; run bash scripts/setup.sh first (or set AGORA_NODE_BIN)" >&2; exit 1; }
mkdir -p secrets
if [ ! -f secrets/bootstrap_identity.key ]; then
  "$BIN" identity new --key-file secrets/bootstrap_identity.key >/dev/null
fi
PEER_ID=$("$BIN" identity show --key-file secrets/bootstrap_identity.key --json | sed -E 's/.*"peer_id":"([^"]+)".*/\1/')
[ -f secrets/dashboard_token ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > secrets/dashboard_token
printf 'BOOTSTRAP_PEER_ID=%s\n' "$PEER_ID" > .env
chmod 600 secrets/*
if [ "$(id -u)" = 0 ]; then chown 65532:65532 secrets/*; else echo "init: run 'sudo chown 65532:65532 deploy/secrets/*' so the containers' nonroot user can read them" >&2; fi
echo "bootstrap peer id: $PEER_ID (written to deploy/.env)"
