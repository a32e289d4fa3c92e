#!/usr/bin/env bash
# OCI images for queue-proxy and activator, without a container daemon.
#   deploy/build-images.sh [--no-build] [--out DIR]     (DIR defaults to .build/images)
# Builds the static release binaries (unless --no-build), then writes for each NAME an OCI image layout
# DIR/NAME/ and the same as an oci-archive DIR/NAME.oci.tar (see deploy/oci_image.py):
#   skopeo copy oci-archive:DIR/queue-proxy.oci.tar docker://REGISTRY/queue-proxy:TAG
#   docker load -i DIR/queue-proxy.oci.tar
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
out=.build/images
while (($#)); do
    case "$1" in
        --no-build) build=0 ;;
        --out)
            [[ $# -ge 2 ]] || { echo "build-images.sh: --out needs a directory" >&2; exit 2; }
            out=$2
            shift
            ;;
        *) echo "usage: deploy/build-images.sh [--no-build] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done

if ((build)); then
    echo "== static release build"
    swift build -c release -Xswiftc -static-executable 2>&1 | grep -E "error|Build complete" | tail -2
fi

source=${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo knative-dataplane)}
mkdir -p "$out"
for name in queue-proxy activator; do
    binary=.build/release/$name
    [[ -x $binary ]] || { echo "build-images.sh: $binary missing (run without --no-build)" >&2; exit 1; }
    if ldd "$binary" >/dev/null 2>&1; then
        echo "build-images.sh: $binary is dynamically linked; the image needs the static build" >&2
        exit 1
    fi
    case "$name" in
        queue-proxy) ports=(8012 8013 8022 8112 9090 9091) ;;
        activator) ports=(8012 8013 9090) ;; # the admin API is on 127.0.0.1
    esac
    port_args=()
    for port in "${ports[@]}"; do port_args+=(--port "$port"); done
    python3 deploy/oci_image.py build --name "$name" --binary "$binary" --out "$out" --source "$source" "${port_args[@]}"
done
