#!/usr/bin/env bash
# Runs the images as Kubernetes would, without a container daemon: each image's layer is unpacked into a
# temporary root filesystem, bind-mounted read-only, and the binary runs chrooted there as 65532:65532 with
# every capability dropped (bounding, inheritable, permitted, effective) and no_new_privs, in a private
# network namespace (so 8012, 8022, 9090... are free) and mount namespace.
#   deploy/test-images.sh [--no-build]     (--no-build: use the binaries in .build/release as they are)
# queue-proxy: Knative's environment, a python3 http.server as the user container; kubelet's readiness probe
# (kube-probe UA, K-Network-Probe: queue on / → 200 "queue"), the activator's (/healthz, same answer), a proxied request, then
# SIGTERM and the pre-stop hook /wait-for-drain. activator: a kubelet probe (K-Kubelet-Probe) → 200, 500 while
# draining. Both, with /var/lib/knative/certs/tls.{crt,key} in the root: exit 1 refusing system-internal TLS.
# Exits 0 when all passed, 1 naming the first failure. Prints SKIP and exits 0 only when this host does not
# permit the sandbox (not root, or unshare of a mount and network namespace refused).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "test-images.sh: FAIL: $*" >&2
    local log
    for log in "${tmp:-/nonexistent}"/*.log; do
        [[ -s $log ]] && { echo "--- last lines of $(basename "$log")" >&2; tail -n 8 "$log" >&2; }
    done
    exit 1
}

cleanup_inside() {
    local pid
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# Inside the namespaces: $2 = the temporary directory with qp-root/ and act-root/.
if [[ ${1:-} == --inside ]]; then
    tmp=$2
    py=$3
    pids=()
    trap cleanup_inside EXIT
    trap 'exit 1' TERM INT
    ip link set lo up
    for root in "$tmp"/*-root; do
        mount --bind "$root" "$root"
        mount -o remount,bind,ro "$root"
        [[ $(findmnt -n -o OPTIONS --target "$root") == ro,* ]] || fail "$root is not mounted read-only"
        # What a container runtime provides: /proc (the Swift runtime needs /proc/self) and /dev.
        mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
        mount --bind /dev "$root/dev"
    done

    # $1 = pid, $2 = root: the process runs chrooted in root, as 65532 with no capabilities at all.
    check_sandbox() {
        local pid=$1 root=$2 status
        status=$(cat "/proc/$pid/status") || fail "process $pid is gone"
        [[ $(readlink "/proc/$pid/root") == "$root" ]] || fail "pid $pid root is $(readlink "/proc/$pid/root"), not $root"
        grep -qE '^Uid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" || fail "pid $pid: $(grep Uid: <<<"$status")"
        grep -qE '^Gid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" || fail "pid $pid: $(grep Gid: <<<"$status")"
        grep -qE '^Groups:\s*$' <<<"$status" || fail "pid $pid: $(grep Groups: <<<"$status")"
        grep -qE '^NoNewPrivs:\s+1$' <<<"$status" || fail "pid $pid: no_new_privs not set"
        local cap
        for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
            grep -qE "^$cap:\s+0+$" <<<"$status" || fail "pid $pid: $(grep "$cap:" <<<"$status")"
        done
    }
    # $1 = what, $2 = expected status, $3 = expected body ('' = any), curl arguments after.
    expect() {
        local what=$1 want_code=$2 want_body=$3 out code body
        shift 3
        out=$(curl -sS -m 10 -w '\n%{http_code}' "$@") || fail "$what: curl $* failed"
        code=${out##*$'\n'}
        body=${out%$'\n'*}
        [[ $code == "$want_code" ]] || fail "$what: status $code, expected $want_code (body: ${body:0:200})"
        [[ -z $want_body || $body == "$want_body" ]] || fail "$what: body '${body:0:200}', expected '$want_body'"
        echo "ok   $what: $code${want_body:+ ${want_body%$'\n'}}"
    }
    # $1 = what, curl arguments after: retries for 10 s until 200.
    wait_200() {
        local what=$1 i
        shift
        for ((i = 0; i < 100; i++)); do
            [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" || true) == 200 ]] && return 0
            sleep 0.1
        done
        fail "$what: no 200 within 10 s"
    }

    mkdir -p "$tmp/www"
    printf 'hello from the user container' >"$tmp/www/hello.txt"
    "$py" -m http.server 8080 --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/user.log" 2>&1 &
    pids+=($!)

    echo "== queue-proxy image (chroot $tmp/qp-root, read-only, uid 65532, no capabilities)"
    env -i \
        SERVING_NAMESPACE=default SERVING_SERVICE=hello SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 \
        QUEUE_SERVING_PORT=8012 QUEUE_SERVING_TLS_PORT=8112 CONTAINER_CONCURRENCY=0 REVISION_TIMEOUT_SECONDS=300 \
        REVISION_RESPONSE_START_TIMEOUT_SECONDS=0 REVISION_IDLE_TIMEOUT_SECONDS=0 \
        SERVING_POD=hello-00001-deployment-abc SERVING_POD_IP=127.0.0.1 \
        SERVING_LOGGING_CONFIG='' SERVING_LOGGING_LEVEL='' SERVING_REQUEST_LOG_TEMPLATE='' \
        SERVING_ENABLE_REQUEST_LOG=false SERVING_REQUEST_METRICS_BACKEND=prometheus \
        USER_PORT=8080 SYSTEM_NAMESPACE=knative-serving METRICS_DOMAIN=knative.dev/internal/serving \
        SERVING_READINESS_PROBE='{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}' \
        ENABLE_PROFILING=false ENABLE_HTTP2_AUTO_DETECTION=false ENABLE_HTTP_FULL_DUPLEX=false \
        ENABLE_MULTI_CONTAINER_PROBES=false HOST_IP=127.0.0.1 ROOT_CA='' OBSERVABILITY_CONFIG='{}' \
        METRICS_COLLECTOR_ADDRESS='' QUEUE_DRAIN_QUIET_PERIOD=1s \
        "$py" deploy/oci_image.py exec-as "$tmp/qp-root" 65532 65532 /queue-proxy >"$tmp/qp.log" 2>&1 &
    qp=$!
    pids+=("$qp")
    wait_200 "kubelet readiness probe (K-Network-Probe: queue on :8012/)" -H 'K-Network-Probe: queue' \
        -H 'User-Agent: kube-probe/1.30' http://127.0.0.1:8012/
    check_sandbox "$qp" "$tmp/qp-root"
    echo "ok   queue-proxy runs chrooted in the read-only image root as 65532:65532, no capabilities, no_new_privs"
    expect "kubelet readiness probe GET / (kube-probe, K-Network-Probe: queue)" 200 queue -H 'K-Network-Probe: queue' -H 'User-Agent: kube-probe/1.30' \
        http://127.0.0.1:8012/
    expect "activator probe GET /healthz (Knative-Activator-Probe, K-Network-Probe: queue)" 200 queue \
        -H 'K-Network-Probe: queue' -H 'User-Agent: Knative-Activator-Probe' http://127.0.0.1:8012/healthz
    expect "request proxied to the user container" 200 "hello from the user container" \
        -H 'Host: hello.default.example.com' http://127.0.0.1:8012/hello.txt
    expect "autoscaler metrics :9090/metrics" 200 "" http://127.0.0.1:9090/metrics
    kill -TERM "$qp"
    expect "pre-stop hook :8022/wait-for-drain after SIGTERM" 200 "" http://127.0.0.1:8022/wait-for-drain
    status=0
    wait "$qp" || status=$?
    [[ $status == 0 ]] || fail "queue-proxy exited $status after SIGTERM; its log: $(tail -5 "$tmp/qp.log")"
    echo "ok   queue-proxy exited 0 after SIGTERM"

    echo "== activator image (chroot $tmp/act-root, read-only, uid 65532, no capabilities)"
    env -i "$py" deploy/oci_image.py exec-as "$tmp/act-root" 65532 65532 /activator \
        --port 8012 --admin-address 127.0.0.1:8090 --drain-grace 2s >"$tmp/act.log" 2>&1 &
    act=$!
    pids+=("$act")
    wait_200 "activator kubelet probe" -H 'K-Kubelet-Probe: 1' http://127.0.0.1:8012/
    check_sandbox "$act" "$tmp/act-root"
    echo "ok   activator runs chrooted in the read-only image root as 65532:65532, no capabilities, no_new_privs"
    expect "activator kubelet probe GET / (K-Kubelet-Probe: 1)" 200 "" -H 'K-Kubelet-Probe: 1' http://127.0.0.1:8012/
    kill -TERM "$act"
    sleep 0.2
    expect "activator kubelet probe while draining" 500 $'received SIGTERM from kubelet\n' -H 'K-Kubelet-Probe: 1' \
        http://127.0.0.1:8012/
    status=0
    wait "$act" || status=$?
    [[ $status == 0 ]] || fail "activator exited $status after SIGTERM; its log: $(tail -5 "$tmp/act.log")"
    echo "ok   activator exited 0 after SIGTERM"

    echo "== system-internal TLS on (/var/lib/knative/certs/tls.crt and tls.key mounted): both refuse to start"
    for pair in queue-proxy:qp-tls-root activator:act-tls-root; do
        name=${pair%%:*}
        status=0
        env -i SERVING_NAMESPACE=default SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 \
            QUEUE_SERVING_PORT=8012 QUEUE_SERVING_TLS_PORT=8112 CONTAINER_CONCURRENCY=0 REVISION_TIMEOUT_SECONDS=300 \
            SERVING_POD=p SERVING_POD_IP=127.0.0.1 SERVING_LOGGING_CONFIG='' SERVING_LOGGING_LEVEL='' USER_PORT=8080 \
            timeout 10 "$py" deploy/oci_image.py exec-as "$tmp/${pair#*:}" 65532 65532 "/$name" \
            >"$tmp/$name-tls.log" 2>&1 || status=$?
        [[ $status == 1 ]] || fail "$name with TLS certificates mounted: exit $status, expected 1"
        grep -q "system-internal-tls is not supported by this build" "$tmp/$name-tls.log" ||
            fail "$name with TLS certificates mounted: no 'system-internal-tls is not supported' line"
        echo "ok   $name exits 1: $(head -c 90 "$tmp/$name-tls.log")…"
    done
    exit 0
fi

build=--no-build
case "${1:-}" in
    --no-build) ;;
    "") build="" ;;
    *) echo "usage: deploy/test-images.sh [--no-build]" >&2; exit 2 ;;
esac

start=$SECONDS
if [[ $(id -u) != 0 ]]; then
    echo "SKIP test-images.sh: needs root for unshare, mount and chroot (uid $(id -u))"
    exit 0
fi
# The sandbox itself: namespaces, a mount and the loopback link (refused in an unprivileged container).
if ! unshare --mount --net --propagation private -- sh -c 'mount -t tmpfs tmpfs /mnt && ip link set lo up' 2>/dev/null
then
    echo "SKIP test-images.sh: this host refuses unshare --mount --net, mount or ip link (no CAP_SYS_ADMIN?)"
    exit 0
fi

deploy/build-images.sh ${build:+"$build"} --out .build/images
# When skopeo is installed, it must read each archive both as an oci-archive and as a docker-archive.
for name in queue-proxy activator; do
    archive=.build/images/$name.oci.tar
    if command -v skopeo >/dev/null; then
        for transport in oci-archive docker-archive; do
            skopeo inspect --raw "$transport:$archive" >/dev/null || fail "skopeo cannot read $transport:$archive"
        done
        echo "ok   skopeo reads $archive as oci-archive and as docker-archive"
    else
        echo "note: skopeo not installed, $archive not cross-checked"
    fi
done

tmp=$(mktemp -d /tmp/test-images.XXXXXX)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
py=$(python3 -c 'import sys; print(sys.executable)')

# Unpack each image's layers, found through its own index.json and manifest, into a root filesystem.
for pair in queue-proxy:qp-root activator:act-root; do
    name=${pair%%:*}
    root=$tmp/${pair#*:}
    mkdir -p "$root"
    layout=.build/images/$name
    layers=$("$py" - "$layout" <<'PY'
import json, sys
layout = sys.argv[1]
index = json.load(open(f"{layout}/index.json"))
digest = index["manifests"][0]["digest"].split(":")[1]
manifest = json.load(open(f"{layout}/blobs/sha256/{digest}"))
config = json.load(open(f"{layout}/blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
assert config["config"]["User"] == "65532:65532", config["config"]["User"]
for layer in manifest["layers"]:
    print(f"{layout}/blobs/sha256/{layer['digest'].split(':')[1]}")
PY
    ) || fail "$layout: cannot read the image's index, manifest or config"
    while read -r layer; do
        tar -xzf "$layer" -C "$root" --same-owner || fail "cannot unpack $layer"
    done <<<"$layers"
    [[ -x $root/$name ]] || fail "$name image has no /$name"
    # The same root with Knative's system-internal TLS volume in it.
    cp -a "$root" "${root%-root}-tls-root"
    mkdir -p "${root%-root}-tls-root/var/lib/knative/certs"
    touch "${root%-root}-tls-root/var/lib/knative/certs/"{tls.crt,tls.key}
done

status=0
timeout -k 5 90 unshare --mount --net --propagation private -- "$0" --inside "$tmp" "$py" || status=$?
if ((status != 0)); then
    echo "test-images.sh: FAIL: the image test failed (exit $status)" >&2
    exit 1
fi
echo "test-images.sh: all passed in $((SECONDS - start)) s"
