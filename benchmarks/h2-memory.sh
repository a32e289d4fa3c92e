#!/usr/bin/env bash
# HTTP/2 memory under clients that never read (issue 11 item 2): nginx (h2c) serves a 50 MB file behind a
# queue-proxy with QUEUE_USER_PROTOCOL=h2c; CONNECTIONS clients advertise SETTINGS_INITIAL_WINDOW_SIZE=0 and open
# STREAMS streams each for the file (h2_window_attack.py). Reports the queue-proxy's RSS before, at its peak,
# at the end of the hold, and 3 s after the clients left, and whether a healthy request worked meanwhile.
#
#   bash benchmarks/h2-memory.sh [--connections 40] [--streams 250] [--hold 10]   (QP_BIN=... to pick a binary)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CONNECTIONS=40 STREAMS=250 HOLD=10
while (($#)); do
  case $1 in
    --connections) CONNECTIONS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    *) echo "h2-memory.sh: unknown option: $1" >&2; exit 2 ;;
  esac
done
QP_BIN="${QP_BIN:-$REPO_ROOT/.build/release/queue-proxy}"
[[ -x "$QP_BIN" ]] || QP_BIN="$REPO_ROOT/.build/debug/queue-proxy"
command -v nginx >/dev/null || { echo "needs nginx (apt-get install nginx-light)" >&2; exit 1; }
/usr/bin/python3 -c 'import h2' 2>/dev/null || { echo "needs python3-h2 (apt-get install python3-h2)" >&2; exit 1; }
BACKEND_PORT=${BACKEND_PORT:-18080} QP_PORT=${QP_PORT:-18012}

TMP=$(mktemp -d /tmp/h2-memory.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [[ -n "${KEEP:-}" ]] && cat "$TMP/qp.log" >&2
  rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

head -c $((50 << 20)) /dev/zero >"$TMP/big"
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    http2_max_concurrent_streams 1000;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT http2;
        location = /big { default_type application/octet-stream; alias $TMP/big; }
        location / { default_type text/plain; return 200 "Hello World!\n"; }
    }
}
EOF
nginx -p "$TMP/nginx/" -e stderr -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
env QUEUE_SERVING_PORT="$QP_PORT" USER_PORT="$BACKEND_PORT" CONTAINER_CONCURRENCY=0 QUEUE_USER_PROTOCOL=h2c \
  QUEUE_SERVING_TLS_PORT=$((QP_PORT + 100)) REVISION_TIMEOUT_SECONDS=300 SERVING_NAMESPACE=default \
  SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL= \
  SERVING_SERVICE=bench SERVING_CONFIGURATION=bench SERVING_REVISION=bench-00001 SERVING_POD=bench-pod \
  SERVING_POD_IP=127.0.0.1 QUEUE_ADMIN_PORT=$((QP_PORT + 10)) QUEUE_METRICS_PORT=$((QP_PORT + 20)) \
  QUEUE_USER_METRICS_PORT=$((QP_PORT + 30)) \
  SERVING_READINESS_PROBE='{"tcpSocket":{"port":'"$BACKEND_PORT"',"host":"127.0.0.1"},"successThreshold":1}' \
  "$QP_BIN" >"$TMP/qp.log" 2>&1 &
QP=$!
PIDS+=("$QP")
for _ in $(seq 100); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge "http://127.0.0.1:$QP_PORT/")" == 200 ]] && break
  sleep 0.1
done

/usr/bin/python3 "$SCRIPT_DIR/h2_window_attack.py" "$QP_PORT" "$QP" --connections "$CONNECTIONS" \
  --streams "$STREAMS" --hold "$HOLD" &
ATTACK=$!
sleep $((HOLD / 2))
healthy=$(curl -s -o /dev/null -w '%{http_code} %{time_total}s' --max-time 10 --http2-prior-knowledge \
  "http://127.0.0.1:$QP_PORT/")
wait "$ATTACK"
echo "healthy request during the attack: $healthy"
echo "binary: $QP_BIN"
