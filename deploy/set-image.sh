#!/usr/bin/env bash
# Writes the image references the kustomize overlays use (deploy/components/images/images.env), by digest.
#   deploy/set-image.sh [--images DIR] REPOSITORY
#       REPOSITORY/queue-proxy@sha256:... and REPOSITORY/activator@sha256:..., the digests from DIR (default
#       .build/images, deploy/build-images.sh's output): NAME.digest if newer than NAME/index.json (what
#       `skopeo copy --digestfile DIR/NAME.digest ...` wrote: the digest the registry stored), else the
#       manifest digest in NAME/index.json (the same one when skopeo copied the OCI manifest unchanged).
#   deploy/set-image.sh --queue-proxy REF --activator REF
#       references of images built or pushed elsewhere; each must be NAME@sha256:<64 hex>.
#   --kubectl REF   the activator pod's `kubectl proxy` sidecar image (default: the one already in
#                   images.env, else registry.k8s.io/kubectl:v1.33.4); any reference form.
# A tag is refused for our two images: the revision reconciler puts queue-sidecar-image into pod specs
# unresolved (README, "Install into Knative"), so a tag would let pods of one revision run different bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/components/images/images.env

usage() {
    echo "usage: deploy/set-image.sh [--images DIR] [--kubectl REF] REPOSITORY" >&2
    echo "       deploy/set-image.sh --queue-proxy REF --activator REF [--kubectl REF]" >&2
    exit 2
}

images=$here/../.build/images
repository=
declare -A ref=()
kubectl_ref=
while (($#)); do
    case "$1" in
        --images | --queue-proxy | --activator | --kubectl)
            [[ $# -ge 2 && -n $2 ]] || { echo "set-image.sh: $1 needs a value" >&2; usage; }
            case "$1" in
                --images) images=$2 ;;
                --queue-proxy) ref[queue-proxy]=$2 ;;
                --activator) ref[activator]=$2 ;;
                --kubectl) kubectl_ref=$2 ;;
            esac
            shift
            ;;
        -h | --help) usage ;;
        -*) echo "set-image.sh: unknown flag $1" >&2; usage ;;
        *)
            [[ -z $repository ]] || usage
            repository=${1%/}
            ;;
    esac
    shift
done

# $1 = image name: the digest of DIR/NAME, from NAME.digest or NAME/index.json.
local_digest() {
    local name=$1 index=$images/$1/index.json digest_file=$images/$1.digest
    if [[ -s $digest_file && (! -e $index || $digest_file -nt $index) ]]; then
        echo "set-image.sh: $name: digest from $digest_file" >&2
        tr -d '[:space:]' <"$digest_file"
        return
    fi
    [[ -s $index ]] || {
        echo "set-image.sh: $index missing: run deploy/build-images.sh, or give --$name REF" >&2
        exit 1
    }
    echo "set-image.sh: $name: digest from $index" >&2
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$index"
}

digest_ref='^[a-z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+@sha256:[0-9a-f]{64}$'
for name in queue-proxy activator; do
    if [[ -z ${ref[$name]:-} ]]; then
        [[ -n $repository ]] || { echo "set-image.sh: give REPOSITORY or --$name REF" >&2; usage; }
        ref[$name]=$repository/$name@$(local_digest "$name")
    fi
    if [[ ! ${ref[$name]} =~ $digest_ref ]]; then
        echo "set-image.sh: $name: '${ref[$name]}' is not REGISTRY/PATH@sha256:<64 hex>; by digest only" \
            "(a tag in queue-sidecar-image is never resolved by Knative)" >&2
        exit 2
    fi
done
if [[ -z $kubectl_ref ]]; then
    kubectl_ref=$(sed -n 's/^KUBECTL_IMAGE=//p' "$out" 2>/dev/null || true)
    kubectl_ref=${kubectl_ref:-registry.k8s.io/kubectl:v1.33.4}
fi
if [[ ! $kubectl_ref =~ ^[^[:space:]=]+$ ]]; then
    echo "set-image.sh: --kubectl '$kubectl_ref': not an image reference" >&2
    exit 2
fi

tmp=$out.tmp
{
    echo "# Written by deploy/set-image.sh; read by deploy/components/images (kustomize)."
    echo "QUEUE_PROXY_IMAGE=${ref[queue-proxy]}"
    echo "ACTIVATOR_IMAGE=${ref[activator]}"
    echo "KUBECTL_IMAGE=$kubectl_ref"
} >"$tmp"
mv "$tmp" "$out"
echo "wrote $out:"
grep -v '^#' "$out"
