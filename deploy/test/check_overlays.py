#!/usr/bin/env python3
"""Asserts what deploy/test-overlays.sh rendered (PyYAML: Debian's python3-yaml).

  check_overlays.py BASE_DIR RENDER_DIR QP_REF ACT_REF KUBECTL_REF

BASE_DIR: the fixture base (config-deployment.yaml, activator.yaml); RENDER_DIR: queue-proxy.yaml,
activator.yaml, both.yaml, the output of `kubectl kustomize` for each overlay. Prints one line per check,
exits 1 at the first failure, naming it.
"""

import copy
import sys

import yaml


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def by_key(docs, path):
    out = {}
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        check(key not in out, f"{path}: {key} twice")
        out[key] = doc
    return out


CM = ("ConfigMap", "knative-serving", "config-deployment")
DEP = ("Deployment", "knative-serving", "activator")


def expect_queue_proxy(base_cm, cm, qp_ref, where):
    check(cm["data"]["queue-sidecar-image"] == qp_ref,
          f"{where}: queue-sidecar-image is {cm['data']['queue-sidecar-image']!r}, expected {qp_ref!r}")
    want = copy.deepcopy(base_cm)
    want["data"]["queue-sidecar-image"] = qp_ref
    check(cm == want, f"{where}: config-deployment differs from the base in more than queue-sidecar-image")
    print(f"ok   {where}: config-deployment queue-sidecar-image = {qp_ref}, the rest as upstream")


def expect_activator(base_dep, dep, act_ref, kubectl_ref, where):
    check(dep["metadata"] == base_dep["metadata"], f"{where}: the Deployment's metadata (labels) changed")
    check(dep["spec"]["selector"] == base_dep["spec"]["selector"], f"{where}: spec.selector changed")
    template, base_template = dep["spec"]["template"], base_dep["spec"]["template"]
    check(template["metadata"] == base_template["metadata"], f"{where}: the pod template's labels changed")
    pod, base_pod = template["spec"], base_template["spec"]
    check(pod.get("serviceAccountName") == "activator" == base_pod.get("serviceAccountName"),
          f"{where}: serviceAccountName is {pod.get('serviceAccountName')!r}, expected upstream's 'activator'")
    for key in sorted(set(pod) | set(base_pod)):
        if key in ("containers", "initContainers", "volumes"):
            continue
        check(pod.get(key) == base_pod.get(key), f"{where}: pod spec {key} changed")
    print(f"ok   {where}: Deployment and pod labels, selector, serviceAccountName activator, affinity, "
          "terminationGracePeriodSeconds as upstream")

    names = [c["name"] for c in pod["containers"]]
    check(names == ["activator"], f"{where}: containers {names}, expected [activator]")
    ours, theirs = pod["containers"][0], base_pod["containers"][0]
    check(ours["image"] == act_ref, f"{where}: activator image {ours['image']!r}, expected {act_ref!r}")
    for key in ("ports", "readinessProbe", "livenessProbe", "securityContext", "resources"):
        check(key in theirs and ours.get(key) == theirs[key], f"{where}: activator {key} differs from upstream's")
    for key in sorted(set(ours) | set(theirs)):
        if key not in ("image", "env"):
            check(ours.get(key) == theirs.get(key), f"{where}: activator container {key} changed")
    check("command" not in ours and "args" not in ours, f"{where}: the activator must run the image's entrypoint")
    ports = {(p["name"], p["containerPort"]) for p in ours["ports"]}
    check({("metrics", 9090), ("profiling", 8008), ("http1", 8012), ("h2c", 8013)} <= ports,
          f"{where}: ports {sorted(ports)}")
    print(f"ok   {where}: activator container image = {act_ref}; ports {sorted(ports)}, probes, "
          "securityContext and resources as upstream")

    env = {e["name"]: e for e in ours["env"]}
    check(len(env) == len(ours["env"]), f"{where}: an env name appears twice")
    check(set(env) == {"KUBE_API", "POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"},
          f"{where}: activator env {sorted(env)}, expected KUBE_API, POD_NAME, POD_IP, SYSTEM_NAMESPACE")
    check(env["KUBE_API"] == {"name": "KUBE_API", "value": "http://127.0.0.1:8001"},
          f"{where}: KUBE_API {env['KUBE_API']}")
    for name, field in (("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP"),
                        ("SYSTEM_NAMESPACE", "metadata.namespace")):
        check(env[name] == {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}},
              f"{where}: {name} is {env[name]}, expected the downward API's {field}")
    print(f"ok   {where}: activator env KUBE_API=http://127.0.0.1:8001, POD_NAME, POD_IP, SYSTEM_NAMESPACE "
          "from the downward API, nothing else")

    sidecars = pod.get("initContainers", [])
    check([c["name"] for c in sidecars] == ["kube-api-proxy"], f"{where}: initContainers {sidecars}")
    proxy = sidecars[0]
    check(proxy.get("restartPolicy") == "Always", f"{where}: kube-api-proxy is not a native sidecar")
    check(proxy["image"] == kubectl_ref, f"{where}: kube-api-proxy image {proxy['image']!r}, expected {kubectl_ref!r}")
    args = proxy.get("args", [])
    check(args[:1] == ["proxy"] and "--port=8001" in args and "--address=127.0.0.1" in args,
          f"{where}: kube-api-proxy args {args}")
    check("command" not in proxy, f"{where}: kube-api-proxy should use the image's kubectl entrypoint")
    sc = proxy.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
          and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities") == {"drop": ["ALL"]},
          f"{where}: kube-api-proxy securityContext {sc}")
    mounts = {m["name"] for m in proxy.get("volumeMounts", [])}
    volumes = {v["name"] for v in pod.get("volumes", [])} - {v["name"] for v in base_pod.get("volumes", [])}
    check(mounts == volumes == {"kube-api-proxy-tmp"}, f"{where}: volumes {volumes}, mounts {mounts}")
    check(base_pod.get("volumes", []) == [v for v in pod.get("volumes", []) if v["name"] != "kube-api-proxy-tmp"],
          f"{where}: upstream's volumes changed")
    print(f"ok   {where}: sidecar kube-api-proxy ({kubectl_ref}): kubectl proxy --address=127.0.0.1 --port=8001, "
          "restartPolicy Always, non-root, read-only root, no capabilities")


def main():
    base_dir, render_dir, qp_ref, act_ref, kubectl_ref = sys.argv[1:6]
    base = by_key(load(f"{base_dir}/config-deployment.yaml") + load(f"{base_dir}/activator.yaml"), base_dir)
    renders = {}
    for overlay in ("queue-proxy", "activator", "both"):
        path = f"{render_dir}/{overlay}.yaml"
        renders[overlay] = by_key(load(path), path)
        check(set(renders[overlay]) == set(base),
              f"{overlay}: rendered {sorted(renders[overlay])}, expected the base's objects {sorted(base)} "
              "(the images ConfigMap is local-config and must not be rendered)")
        text = open(path).read()
        for placeholder in ("ACTIVATOR_IMAGE", "KUBECTL_IMAGE", "knative-dataplane-images"):
            check(placeholder not in text, f"{overlay}: {placeholder!r} left in the output")
    print("ok   each overlay renders exactly the base's objects, no placeholder or images ConfigMap left")

    expect_queue_proxy(base[CM], renders["queue-proxy"][CM], qp_ref, "overlays/queue-proxy")
    check(renders["queue-proxy"][DEP] == base[DEP], "overlays/queue-proxy: the activator Deployment changed")
    print("ok   overlays/queue-proxy: the activator Deployment is upstream's")

    check(renders["activator"][CM] == base[CM], "overlays/activator: config-deployment changed")
    print("ok   overlays/activator: config-deployment is upstream's")
    expect_activator(base[DEP], renders["activator"][DEP], act_ref, kubectl_ref, "overlays/activator")

    expect_queue_proxy(base[CM], renders["both"][CM], qp_ref, "overlays/both")
    check(renders["both"][DEP] == renders["activator"][DEP],
          "overlays/both: the activator differs from overlays/activator's")
    print("ok   overlays/both: the activator Deployment is overlays/activator's")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"test-overlays.sh: FAIL: {failure}", file=sys.stderr)
        sys.exit(1)
