#!/usr/bin/env bash
# The deploy/compose.yml mesh without Docker: one bootstrap and two dedicated nodes (eu-west, us-east) as
# real processes on 127.0.0.1, finding each other through the DHT, plus Prometheus scraping all three when
# promtool's package (prometheus) is installed.
#   scripts/mesh.sh up | status | down
# State, logs and the generated Prometheus config live in $AGORA_MESH_DIR (default /tmp/agora-mesh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${AGORA_NODE_BIN:-$ROOT/dist/agora-node}
DIR=${AGORA_MESH_DIR:-/tmp/agora-mesh}
HEARTBEAT=${AGORA_MESH_HEARTBEAT:-5s}
NODES=(bootstrap mixer-eu mixer-us)
declare -A MODE=([bootstrap]=bootstrap [mixer-eu]=dedicated [mixer-us]=dedicated)
declare -A REGION=([bootstrap]=eu-west [mixer-eu]=eu-west [mixer-us]=us-east)
declare -A IDX=([bootstrap]=1 [mixer-eu]=2 [mixer-us]=3)
p2p_port() { echo $((7100 + IDX[$1])); }
dash_port() { echo $((8180 + IDX[$1])); }
metrics_port() { echo $((9190 + IDX[$1])); }
PROM_PORT=9190

log() { printf 'mesh: %s\n' "$*" >&2; }

wait_healthy() {
  local url=$1 i
  for i in $(seq 1 200); do
    "$BIN" health --endpoint "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

up() {
  [ -x "$BIN" ] || bash scripts/setup.sh
  mkdir -p "$DIR"
  local boot_key="$DIR/bootstrap/identity.key"
  [ -f "$boot_key" ] || "$BIN" identity new --key-file "$boot_key" >/dev/null
  local boot_id
  boot_id=$("$BIN" identity show --key-file "$boot_key" --json | sed -E 's/.*"peer_id":"([^"]+)".*/\1/')
  local boot_addr="/ip4/127.0.0.1/tcp/$(p2p_port bootstrap)/p2p/$boot_id"
  for n in "${NODES[@]}"; do
    if [ -f "$DIR/$n/agora-node.pid" ] && kill -0 "$(cat "$DIR/$n/agora-node.pid")" 2>/dev/null; then log "$n already running"; continue; fi
    local extra=()
    [ "$n" = bootstrap ] || extra=(--bootstrap "$boot_addr")
    mkdir -p "$DIR/$n"
    nohup "$BIN" start --mode "${MODE[$n]}" --region "${REGION[$n]}" --data-dir "$DIR/$n" \
      --listen-addr 127.0.0.1 --listen-port "$(p2p_port "$n")" \
      --dashboard-port "$(dash_port "$n")" --metrics-port "$(metrics_port "$n")" \
      --heartbeat-interval "$HEARTBEAT" --set identity.name="$n" "${extra[@]}" \
      >>"$DIR/$n/node.log" 2>&1 &
    wait_healthy "http://127.0.0.1:$(dash_port "$n")" || { log "$n did not become healthy; see $DIR/$n/node.log"; exit 1; }
    log "$n up: p2p $(p2p_port "$n"), dashboard http://127.0.0.1:$(dash_port "$n"), metrics http://127.0.0.1:$(metrics_port "$n")/metrics"
  done
  echo "$boot_addr" > "$DIR/bootstrap.addr"
  if command -v prometheus >/dev/null; then
    sed -e "s/bootstrap:9090/127.0.0.1:$(metrics_port bootstrap)/" -e "s/mixer-eu:9090/127.0.0.1:$(metrics_port mixer-eu)/" \
        -e "s/mixer-us:9090/127.0.0.1:$(metrics_port mixer-us)/" deploy/prometheus/prometheus.yml > "$DIR/prometheus.yml"
    if ! { [ -f "$DIR/prometheus.pid" ] && kill -0 "$(cat "$DIR/prometheus.pid")" 2>/dev/null; }; then
      nohup prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
        --web.listen-address="127.0.0.1:$PROM_PORT" >>"$DIR/prometheus.log" 2>&1 &
      echo $! > "$DIR/prometheus.pid"
      log "prometheus: http://127.0.0.1:$PROM_PORT"
    fi
  fi
  # The mesh has found itself when a fresh client discovers both mixers through the bootstrap node.
  local found=0 i
  for i in $(seq 1 60); do
    found=$("$BIN" discover --bootstrap "$boot_addr" --capability mixer --json --timeout 5 2>/dev/null | grep -o '"peer_id"' | wc -l || true)
    [ "$found" -ge 2 ] && break
    sleep 1
  done
  [ "$found" -ge 2 ] || { log "discovery found $found of 2 mixers"; exit 1; }
  log "mesh converged: a fresh client discovers both mixers through $boot_addr"
}

status() {
  for n in "${NODES[@]}"; do
    printf '%-10s ' "$n"
    "$BIN" status --data-dir "$DIR/$n" --endpoint "http://127.0.0.1:$(dash_port "$n")" | sed -n '2p;3p' | tr -s ' ' | tr '\n' ' '
    echo
  done
}

down() {
  for n in "${NODES[@]}"; do "$BIN" stop --data-dir "$DIR/$n" || true; done
  if [ -f "$DIR/prometheus.pid" ]; then kill "$(cat "$DIR/prometheus.pid")" 2>/dev/null || true; rm -f "$DIR/prometheus.pid"; fi
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) echo "usage: scripts/mesh.sh up | status | down" >&2; exit 2 ;;
esac
