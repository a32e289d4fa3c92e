#!/usr/bin/env bash
# The main job: builds release binaries and runs Knative's helloworld-go Service with kn-local: our activator
# as the ingress on :8080, pods (helloworld + queue-proxy) started and stopped by kn-local's autoscaler.
#   ./run.sh   then   curl -H "Host: helloworld-go.default.example.com" http://127.0.0.1:8080   → Hello World!
# The first request starts a pod from zero; idle for the stable window + grace (60 s + 30 s) and it is gone.
# Extra arguments go to `kn-local serve` (e.g. --stable-window=6s --scale-to-zero-grace-period=5s). Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
command -v ip >/dev/null || need+=(iproute2)  # pods' network namespaces (kn-local --pod-network)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
swift build -c release -Xswiftc -static-executable

# Initial scale 0 (Knative's default is 1) so that the very first request shows a cold start.
exec .build/release/kn-local serve -f examples/helloworld-go.yaml --initial-scale=0 --allow-zero-initial-scale=true "$@"
