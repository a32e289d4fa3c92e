#!/usr/bin/env bash
# The main job: builds release binaries and runs Knative's helloworld sample behind our queue-proxy.
#   ./run.sh            → curl http://127.0.0.1:8012/  prints "Hello World!"
# Ports: PORT (app, default 8080) and QUEUE_SERVING_PORT (proxy, default 8012). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
swift build -c release -Xswiftc -static-executable

app_port="${PORT:-8080}"
proxy_port="${QUEUE_SERVING_PORT:-8012}"
PORT="$app_port" TARGET="${TARGET:-World}" .build/release/helloworld &
app=$!
trap 'kill $app $proxy 2>/dev/null; wait' EXIT INT TERM
# The environment Knative's controller gives the sidecar (spec §1.1).
QUEUE_SERVING_PORT="$proxy_port" USER_PORT="$app_port" CONTAINER_CONCURRENCY="${CONTAINER_CONCURRENCY:-0}" \
    QUEUE_SERVING_TLS_PORT=8112 REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL= \
    SERVING_NAMESPACE=default SERVING_CONFIGURATION=helloworld-go SERVING_REVISION=helloworld-go-00001 \
    SERVING_POD=helloworld-go-00001-local SERVING_POD_IP=127.0.0.1 QUEUE_DRAIN_QUIET_PERIOD=1s \
    .build/release/queue-proxy &
proxy=$!
echo "helloworld on :$app_port behind queue-proxy on :$proxy_port — try: curl http://127.0.0.1:$proxy_port/"
wait
