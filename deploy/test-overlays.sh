#!/usr/bin/env bash
# Offline render test of the kustomize overlays (README, "Install into Knative"); no network, no cluster.
#   deploy/test-overlays.sh
# In a temporary copy of deploy/ whose knative/ base is the fixture deploy/test/base/ (upstream-shaped
# config-deployment and activator, written for this test): deploy/set-image.sh writes images.env from a fake
# build output (digests from NAME/index.json, then from a newer NAME.digest as `skopeo copy --digestfile`
# writes it; a tag is refused; the kubectl image is kept across runs), then `kubectl kustomize` renders
# overlays/queue-proxy, overlays/activator and overlays/both, and deploy/test/check_overlays.py asserts the
# output against the fixture: queue-sidecar-image is our digest reference and nothing else changed; the
# activator Deployment has our image and env, the kube-api-proxy sidecar, and upstream's labels, selector,
# ports, probes, securityContext, resources and serviceAccountName. Needs kubectl with kustomize v5 (kubectl
# >= 1.27) and python3 with PyYAML (Debian: python3-yaml). Exits 0 when all passed, 1 naming the failure.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "test-overlays.sh: FAIL: $*" >&2
    exit 1
}

start=$SECONDS
command -v kubectl >/dev/null || fail "kubectl not found (Debian: apt-get install kubernetes-client)"
kustomize=$(kubectl version --client -o json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("kustomizeVersion", ""))' || true)
if [[ ! $kustomize =~ ^v([0-9]+)\. ]] || ((BASH_REMATCH[1] < 5)); then
    fail "kubectl's kustomize is '${kustomize:-not reported}'; the overlays need kustomize v5 (kubectl >= 1.27)"
fi
py=
for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import yaml' 2>/dev/null; then
        py=$candidate
        break
    fi
done
[[ -n $py ]] || fail "no python3 with PyYAML (Debian: apt-get install python3-yaml)"
client=$(kubectl version --client -o json |
    "$py" -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
echo "== kubectl $client, kustomize $kustomize"

tmp=$(mktemp -d /tmp/test-overlays.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/deploy"
cp -r deploy/components deploy/overlays deploy/set-image.sh "$tmp/deploy/"
rm -f "$tmp/deploy/components/images/images.env" # a user's own, if any
cp -r deploy/test/base "$tmp/deploy/knative"
env_file=$tmp/deploy/components/images/images.env

# A build output as deploy/build-images.sh leaves it: NAME/index.json naming the manifest digest.
digest() { printf 'sha256:%064d' "$1"; }
for pair in queue-proxy:1 activator:2; do
    mkdir -p "$tmp/images/${pair%%:*}"
    printf '{"schemaVersion": 2, "manifests": [{"digest": "%s", "size": 1}]}\n' "$(digest "${pair#*:}")" \
        >"$tmp/images/${pair%%:*}/index.json"
done
repo=registry.test:5000/knative-dataplane
kubectl_ref=registry.test:5000/tools/kubectl:v1.33.4

"$tmp/deploy/set-image.sh" --images "$tmp/images" --kubectl "$kubectl_ref" "$repo" >"$tmp/set-image.log" 2>&1 ||
    fail "set-image.sh: $(cat "$tmp/set-image.log")"
grep -qx "QUEUE_PROXY_IMAGE=$repo/queue-proxy@$(digest 1)" "$env_file" || fail "images.env: $(cat "$env_file")"
grep -qx "ACTIVATOR_IMAGE=$repo/activator@$(digest 2)" "$env_file" || fail "images.env: $(cat "$env_file")"
echo "ok   set-image.sh: digests from .build/images/NAME/index.json"

# skopeo copy --digestfile wrote a newer activator.digest (say the registry converted the manifest).
digest 3 >"$tmp/images/activator.digest"
touch -d '+1 second' "$tmp/images/activator.digest"
"$tmp/deploy/set-image.sh" --images "$tmp/images" "$repo" >"$tmp/set-image.log" 2>&1 ||
    fail "set-image.sh: $(cat "$tmp/set-image.log")"
grep -qx "ACTIVATOR_IMAGE=$repo/activator@$(digest 3)" "$env_file" ||
    fail "images.env ignores activator.digest: $(cat "$env_file")"
grep -qx "KUBECTL_IMAGE=$kubectl_ref" "$env_file" || fail "images.env lost the kubectl image: $(cat "$env_file")"
echo "ok   set-image.sh: a newer NAME.digest (skopeo --digestfile) wins; the kubectl image is kept"

cp "$env_file" "$tmp/images.env.before"
status=0
"$tmp/deploy/set-image.sh" --queue-proxy "$repo/queue-proxy:latest" --activator "$repo/activator@$(digest 2)" \
    >"$tmp/set-image.log" 2>&1 || status=$?
((status == 2)) || fail "set-image.sh took a tag: exit $status, $(cat "$tmp/set-image.log")"
grep -q 'by digest only' "$tmp/set-image.log" ||
    fail "set-image.sh's refusal does not say why: $(cat "$tmp/set-image.log")"
cmp -s "$env_file" "$tmp/images.env.before" || fail "set-image.sh changed images.env while refusing a tag"
echo "ok   set-image.sh refuses a tag (exit 2, images.env unchanged)"

mkdir "$tmp/render"
for overlay in queue-proxy activator both; do
    KUBECONFIG=/nonexistent kubectl kustomize "$tmp/deploy/overlays/$overlay" >"$tmp/render/$overlay.yaml" \
        2>"$tmp/render/$overlay.err" || fail "kubectl kustomize overlays/$overlay: $(cat "$tmp/render/$overlay.err")"
    [[ ! -s $tmp/render/$overlay.err ]] ||
        fail "kubectl kustomize overlays/$overlay warned: $(cat "$tmp/render/$overlay.err")"
    echo "ok   kubectl kustomize overlays/$overlay renders, no warning"
done

"$py" deploy/test/check_overlays.py deploy/test/base "$tmp/render" "$repo/queue-proxy@$(digest 1)" \
    "$repo/activator@$(digest 3)" "$kubectl_ref" || exit 1
echo "test-overlays.sh: all passed in $((SECONDS - start)) s"
