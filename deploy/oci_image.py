#!/usr/bin/env python3
"""OCI images without a container daemon (stdlib only), and a tiny sandbox exec for deploy/test-images.sh.

  oci_image.py build --name NAME --binary PATH --out DIR --port P [--port P ...] [--source URL]
      writes DIR/NAME/ (an OCI image layout: oci-layout, index.json, blobs/sha256/...) and DIR/NAME.oci.tar
      (the same layout as one tar, an oci-archive; it also carries a docker-archive manifest.json, so both
      `skopeo copy oci-archive:DIR/NAME.oci.tar docker://...` and `docker load -i DIR/NAME.oci.tar` take it).
      The output is a function of the binary and the git commit only: every tar entry has mtime = the commit's
      time, uid/gid 0, and gzip carries no name or time.

  oci_image.py exec-as ROOT UID GID PROGRAM [ARG...]
      (root only) chroot into ROOT, drop every capability from the bounding and inheritable sets, set
      no_new_privs, clear supplementary groups, set uid/gid (which empties the permitted and effective sets),
      then exec PROGRAM, a path inside ROOT.
"""

import argparse
import ctypes
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time

NONROOT = 65532
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"


def git(*args):
    try:
        out = subprocess.run(["git", *args], check=True, capture_output=True, text=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def tar_bytes(entries, mtime):
    """entries: (path, kind, mode, data[, owner]) with kind 'dir' or 'file'; returns a deterministic pax tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, data, *owner in entries:
            info = tarfile.TarInfo(path)
            info.mtime = mtime
            info.uid = info.gid = owner[0] if owner else 0
            info.uname = info.gname = ""
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(args):
    with open(args.binary, "rb") as f:
        binary = f.read()
    commit = git("rev-parse", "HEAD") or "unknown"
    epoch = int(git("log", "-1", "--format=%ct") or os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    name = args.name

    layer_tar = tar_bytes(
        [
            ("dev", "dir", 0o755, None),  # mount points, as runc would make them; the Swift runtime
            ("etc", "dir", 0o755, None),  # aborts ("Unable to obtain Swift runtime path") without /proc
            ("etc/group", "file", 0o644, GROUP.encode()),
            ("etc/passwd", "file", 0o644, PASSWD.encode()),
            ("home", "dir", 0o755, None),
            ("home/nonroot", "dir", 0o700, None, NONROOT),
            (name, "file", 0o755, binary),
            ("proc", "dir", 0o755, None),
            ("sys", "dir", 0o755, None),
            ("tmp", "dir", 0o1777, None),
        ],
        epoch,
    )
    layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=0)

    labels = {
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": name,
    }
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": f"{NONROOT}:{NONROOT}",
            "Entrypoint": [f"/{name}"],
            "WorkingDir": "/",
            "Env": ["PATH=/"],
            "ExposedPorts": {f"{p}/tcp": {} for p in sorted(set(args.port))},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": created, "created_by": f"deploy/build-images.sh ({name}, static binary)"}],
    }
    config_json = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config_json),
            "size": len(config_json),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(layer_gz),
                "size": len(layer_gz),
            }
        ],
        "annotations": labels,
    }
    manifest_json = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    ref = f"{name}:latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest_json),
                "size": len(manifest_json),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": "latest", "io.containerd.image.name": ref},
            }
        ],
    }
    index_json = json.dumps(index, sort_keys=True, indent=2).encode() + b"\n"
    oci_layout = b'{"imageLayoutVersion":"1.0.0"}\n'
    blobs = {sha256(b).split(":")[1]: b for b in (layer_gz, config_json, manifest_json)}
    docker_manifest = [
        {
            "Config": "blobs/sha256/" + sha256(config_json).split(":")[1],
            "RepoTags": [ref],
            "Layers": ["blobs/sha256/" + sha256(layer_gz).split(":")[1]],
        }
    ]
    docker_manifest_json = json.dumps(docker_manifest, separators=(",", ":")).encode() + b"\n"

    layout = os.path.join(args.out, name)
    blob_dir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    for old in os.listdir(blob_dir):
        if old not in blobs:
            os.unlink(os.path.join(blob_dir, old))
    files = {"oci-layout": oci_layout, "index.json": index_json, "manifest.json": docker_manifest_json}
    files.update({f"blobs/sha256/{d}": b for d, b in blobs.items()})
    for rel, data in files.items():
        with open(os.path.join(layout, rel), "wb") as f:
            f.write(data)

    entries = [("blobs", "dir", 0o755, None), ("blobs/sha256", "dir", 0o755, None)]
    entries += [(rel, "file", 0o644, files[rel]) for rel in sorted(files)]
    archive = tar_bytes(entries, epoch)
    archive_path = os.path.join(args.out, f"{name}.oci.tar")
    with open(archive_path, "wb") as f:
        f.write(archive)

    mib = 1024 * 1024
    print(
        f"{name}: {layout}/ and {archive_path}\n"
        f"  manifest {sha256(manifest_json)}\n"
        f"  layer {len(layer_gz) / mib:.1f} MiB compressed ({len(layer_tar) / mib:.1f} MiB unpacked), "
        f"image total {(len(layer_gz) + len(config_json) + len(manifest_json)) / mib:.1f} MiB, "
        f"archive {len(archive) / mib:.1f} MiB"
    )


PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def exec_as(args):
    libc = ctypes.CDLL(None, use_errno=True)
    os.chroot(args.root)
    os.chdir("/")
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read()) if os.path.exists("/proc/sys/kernel/cap_last_cap") else 40
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            sys.exit(f"exec-as: prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"exec-as: prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    os.setgroups([])
    os.setresgid(args.gid, args.gid, args.gid)
    os.setresuid(args.uid, args.uid, args.uid)  # from 0 to non-zero: permitted, effective, ambient emptied
    os.execve(args.program, [args.program, *args.args], dict(os.environ))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--name", required=True)
    b.add_argument("--binary", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--port", type=int, action="append", default=[])
    b.add_argument("--source", default="")
    e = sub.add_parser("exec-as")
    e.add_argument("root")
    e.add_argument("uid", type=int)
    e.add_argument("gid", type=int)
    e.add_argument("program")
    e.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    build(args) if args.command == "build" else exec_as(args)


if __name__ == "__main__":
    main()
