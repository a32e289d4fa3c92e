#!/usr/bin/env python3
"""Side-by-side HTTP/1 benchmark: queue-proxy against direct access, a bare C epoll relay (the floor),
nginx and HAProxy, plus the activator in front of queue-proxy and its memory holding requests at zero,
following /work/shared/BENCHMARKING.md: one backend for all, contenders alternated within rounds, one
warm-up, medians over rounds, ratios of medians, CPU µs per request from /proc, RSS from VmRSS/VmHWM.

Started by run.sh, which installs what is missing and builds (`--prepare`, outside), then runs this
driver inside a private network namespace with only loopback up. Standard library only.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "RESULTS.md"
QP_BIN_DEFAULT = REPO_ROOT / ".build" / "release" / "queue-proxy"
ACT_BIN_DEFAULT = REPO_ROOT / ".build" / "release" / "activator"
FLOOR_SRC_DEFAULT = REPO_ROOT.parent / "shared" / "bench" / "floor.c"

STARTUP_TIMEOUT = 20.0
IDLE_CONNS_TIMEOUT = 30
HELD_TIMEOUT = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")

BACKEND_PORT = 8080
NGINX_PROXY_PORT = 8081
HAPROXY_PORT = 8082
FLOOR_PORT = 8083

# The sections this driver writes; every other "## " section of the report (written by h2.sh,
# h2-memory.sh, coldstart.py) is kept as it is when the report is rewritten.
OWN_SECTIONS = ("## Saturation", "## Paced", "## Breaker overhead", "## Activator in the path",
                "## Idle connections", "## All runs")


@dataclass(frozen=True)
class QPRow:
    """One queue-proxy contender (one instance of the binary)."""
    name: str
    port: int
    cc: int
    admin_port: int
    metrics_port: int
    user_metrics_port: int
    tls_port: int
    extra_env: dict[str, str] = field(default_factory=dict)


# queue-proxy contenders, one per row, easy to extend. The first row is also the target of the
# idle-connections memory test; the first cc=0 row is the one behind the activator.
QP_ROWS = [
    QPRow("queue-proxy cc=0", 8012, 0, 8022, 9090, 9091, 8112),
    # 8013 is Knative's port for h2c revisions, where queue-proxy speaks h2c to the app by default: the
    # nginx backend speaks HTTP/1.1, so say so.
    QPRow("queue-proxy cc=10", 8013, 10, 8023, 9092, 9093, 8113, {"QUEUE_USER_PROTOCOL": "http1"}),
]
BREAKER_CC = (0, 10)  # breaker-overhead runs: the first QP_ROWS rows with these cc values


@dataclass(frozen=True)
class ActivatorSetup:
    port: int = 8014
    metrics_port: int = 9094
    admin_host: str = "127.0.0.1"
    admin_port: int = 8090
    namespace: str = "default"
    revision: str = "hello-00001"      # in front of queue-proxy cc=0
    host: str = "hello.default.example.com"
    cold_revision: str = "cold-00001"  # no endpoints: the held-requests memory test


ACT = ActivatorSetup()


@dataclass
class Contender:
    name: str
    kind: str                 # direct | floor | qp | activator | nginx | haproxy
    port: int
    pid: int | None = None    # process (tree) whose CPU and memory are measured
    ok: bool = True
    note: str = ""            # why it is n/a
    host: str = ""            # Host header wrk sends ("" = default)
    pid2: int | None = None   # a second process measured separately (the queue-proxy behind the activator)
    cc: int | None = None
    rss_idle_kb: int | None = None
    rss_after_kb: int | None = None
    hwm_kb: int | None = None

    @property
    def is_proxy(self) -> bool:
        return self.kind != "direct"


@dataclass
class WrkResult:
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    non2xx: int = 0
    socket_errors: int = 0


@dataclass
class Run:
    mode: str                 # warmup | sat | paced | breaker
    round: int
    contender: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non2xx: int
    socket_errors: int
    cpu_us: float | None      # CPU µs/request of the contender's process tree
    cpu2_us: float | None     # of its second process (activator row: the queue-proxy)


@dataclass
class Options:
    rounds: int
    duration: str
    warmup: str
    connections: int
    threads: int
    paced: bool
    paced_delay_ms: int
    breaker: bool
    breaker_connections: int
    idle_conns: int
    activator: bool
    held_requests: int
    build: bool
    out: Path
    keep_tmp: bool
    floor_src: Path
    qp_bin: Path
    act_bin: Path

    @property
    def wrk_cmd(self) -> str:
        return f"wrk -t{self.threads} -c{self.connections} -d{self.duration} --latency"

    @property
    def breaker_wrk_cmd(self) -> str:
        return f"wrk -t1 -c{self.breaker_connections} -d{self.duration} --latency"

    @property
    def warmup_enabled(self) -> bool:
        return self.warmup not in ("0", "0s")


# ------------------------------------------------------------------------------------- helpers ---
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def tree_pids(root: int) -> list[int]:
    """The process and its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            line = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(line[line.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, queue = [], [root]
    while queue:
        p = queue.pop(0)
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        queue.extend(children.get(p, []))
    return out


def cpu_ticks(root: int) -> int:
    """utime+stime (clock ticks) of the process tree: fields 14 and 15 of /proc/PID/stat."""
    total = 0
    for p in tree_pids(root):
        try:
            line = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        f = line[line.rindex(")") + 2:].split()  # f[0] is field 3 (state): field N is f[N-3]
        total += int(f[11]) + int(f[12])
    return total


def status_kb(root: int, key: str) -> int:
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) over the process tree, in kB."""
    total = 0
    for p in tree_pids(root):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def proc_state(pid: int) -> str:
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return line[line.rindex(")") + 2:].split()[0]


def alive(pid: int) -> bool:
    return proc_state(pid) not in ("", "Z")


def kill_tree(pid: int) -> None:
    pids = tree_pids(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    for _ in range(50):
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.1)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def http_request(port: int, path: str = "/", host: str = "", method: str = "GET", body: str | None = None,
                 address: str = "127.0.0.1", timeout: float = 2.0) -> tuple[int, str]:
    """One request with http.client (no proxy from the environment); (status, body) or (0, error)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        headers = {"Host": host} if host else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)
    finally:
        conn.close()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def run_text(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr
    except (OSError, subprocess.SubprocessError):
        return ""


def med(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(v: float | None, decimals: int) -> str:
    return "—" if v is None else f"{v:.{decimals}f}"


def ratio(a: float | None, b: float | None, decimals: int = 2) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{decimals}f}"


def mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f}"


def to_ms(v: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0), ("h", 3600000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * scale
    return float(v)


def parse_wrk(text: str) -> WrkResult:
    r = WrkResult()
    for line in text.splitlines():
        if m := re.match(r"Requests/sec:\s+(\S+)", line):
            r.rps = float(m.group(1))
        elif m := re.match(r"\s+50%\s+(\S+)", line):
            r.p50_ms = to_ms(m.group(1))
        elif m := re.match(r"\s+99%\s+(\S+)", line):
            r.p99_ms = to_ms(m.group(1))
        elif m := re.match(r"\s*(\d+) requests in ", line):
            r.requests = int(m.group(1))
        elif m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            r.non2xx = int(m.group(1))
        elif "Socket errors:" in line:
            r.socket_errors = sum(int(n) for n in re.findall(r"\d+", line))
    return r


# --------------------------------------------------------------------------------- the bench ---
class Bench:
    def __init__(self, opt: Options):
        self.opt = opt
        self.tmp = Path(tempfile.mkdtemp(prefix="qp-bench."))
        self.tmp.chmod(0o755)  # nginx workers run as an unprivileged user
        self.started: list[subprocess.Popen] = []
        self.contenders: list[Contender] = []
        self.runs: list[Run] = []
        self.wrk: subprocess.Popen | None = None
        self.act_qp: Contender | None = None    # the queue-proxy behind the activator
        self.activator: Contender | None = None
        self.held_line = ""
        self.idle_line = ""
        self.loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])  # before we add any load

    # -------------------------------------------------------------------------- processes ---
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        logf = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=REPO_ROOT)
        logf.close()
        self.started.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        kill_tree(p.pid)
        p.wait()
        self.started.remove(p)

    def cleanup(self, failed: bool) -> None:
        if self.wrk is not None and self.wrk.poll() is None:
            kill_tree(self.wrk.pid)
            self.wrk.wait()
        for p in list(self.started):
            self.stop(p)
        if failed:
            for f in sorted(self.tmp.glob("*.log")) + sorted(self.tmp.glob("*/logs/error.log")):
                if f.stat().st_size:
                    log(f"last lines of {f}:")
                    print("\n".join(f.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        if self.opt.keep_tmp:
            log(f"temp dir kept: {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, name: str, n: int = 10) -> None:
        try:
            print("\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-n:]),
                  file=sys.stderr)
        except OSError:
            pass

    def wait_ready(self, port: int, p: subprocess.Popen | None = None, host: str = "") -> bool:
        """Until http://127.0.0.1:PORT/ answers 200 (with Host: HOST); false early if P died."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if p is not None and p.poll() is not None:
                return False
            if http_request(port, host=host)[0] == 200:
                return True
            time.sleep(0.2)
        return False

    def start_nginx(self, name: str, conf: Path) -> subprocess.Popen:
        prefix = self.tmp / name
        (prefix / "logs").mkdir(parents=True)
        (prefix / "tmp").mkdir()
        check = subprocess.run(["nginx", "-t", "-q", "-p", f"{prefix}/", "-e", "stderr", "-c", str(conf)])
        if check.returncode != 0:
            raise BenchError(f"nginx config {conf} does not validate")
        return self.start(name, ["nginx", "-p", f"{prefix}/", "-e", "stderr", "-c", str(conf)])

    # ------------------------------------------------------------------------- contenders ---
    def n_a(self, name: str, kind: str, port: int, note: str, **kw) -> Contender:
        log(f"{name}: {note} -> n/a")
        c = Contender(name, kind, port, ok=False, note=note, **kw)
        self.contenders.append(c)
        return c

    def start_contenders(self) -> None:
        opt = self.opt
        for port in (BACKEND_PORT, NGINX_PROXY_PORT, HAPROXY_PORT):
            if not port_free(port):
                raise BenchError(f"port {port} is already in use inside the namespace")

        log(f"starting backend: nginx on :{BACKEND_PORT}")
        backend = self.start_nginx("nginx-backend", SCRIPT_DIR / "nginx-backend.conf")
        if not self.wait_ready(BACKEND_PORT, backend):
            raise BenchError(f"backend nginx did not answer on :{BACKEND_PORT}")
        self.contenders.append(Contender("direct", "direct", BACKEND_PORT))

        self.start_floor()
        for row in QP_ROWS:
            self.start_qp(row)
        if opt.activator:
            self.start_activator()

        log(f"starting nginx proxy on :{NGINX_PROXY_PORT}")
        p = self.start_nginx("nginx-proxy", SCRIPT_DIR / "nginx-proxy.conf")
        if not self.wait_ready(NGINX_PROXY_PORT, p):
            raise BenchError(f"nginx proxy did not answer on :{NGINX_PROXY_PORT}")
        self.contenders.append(Contender("nginx (upstream keepalive)", "nginx", NGINX_PROXY_PORT, p.pid))

        log(f"starting HAProxy on :{HAPROXY_PORT}")
        cfg = SCRIPT_DIR / "haproxy.cfg"
        if subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)]).returncode != 0:
            raise BenchError("haproxy.cfg does not validate")
        p = self.start("haproxy", ["haproxy", "-db", "-f", str(cfg)])
        if not self.wait_ready(HAPROXY_PORT, p):
            raise BenchError(f"HAProxy did not answer on :{HAPROXY_PORT}")
        self.contenders.append(Contender("HAProxy (http-reuse always)", "haproxy", HAPROXY_PORT, p.pid))

        for c in self.contenders:  # idle RSS, before any load
            if c.pid is not None:
                c.rss_idle_kb = status_kb(c.pid, "VmRSS")

    def start_floor(self) -> None:
        name, src = "floor (bare C epoll relay)", self.opt.floor_src
        if not src.is_file():
            self.n_a(name, "floor", FLOOR_PORT, f"{src} not found")
            return
        if not port_free(FLOOR_PORT):
            self.n_a(name, "floor", FLOOR_PORT, f"port {FLOOR_PORT} already in use")
            return
        binary = self.tmp / "floor"
        cc = subprocess.run(["cc", "-O2", "-o", str(binary), str(src)], capture_output=True, text=True)
        if cc.returncode != 0:
            self.n_a(name, "floor", FLOOR_PORT, f"cc -O2 {src} failed: {cc.stderr.strip()[:200]}")
            return
        log(f"starting floor on :{FLOOR_PORT} ({src}, cc -O2)")
        p = self.start("floor", [str(binary), str(FLOOR_PORT), str(BACKEND_PORT)])
        if self.wait_ready(FLOOR_PORT, p):
            self.contenders.append(Contender(name, "floor", FLOOR_PORT, p.pid))
        else:
            self.log_tail("floor")
            self.stop(p)
            self.n_a(name, "floor", FLOOR_PORT, f"did not answer 200 on :{FLOOR_PORT}")

    def start_qp(self, row: QPRow) -> None:
        qp_bin = self.opt.qp_bin
        if not os.access(qp_bin, os.X_OK):
            self.n_a(row.name, "qp", row.port, f"binary {qp_bin} not found", cc=row.cc)
            return
        if not port_free(row.port):
            self.n_a(row.name, "qp", row.port, f"port {row.port} already in use", cc=row.cc)
            return
        log(f"starting {row.name} on :{row.port} ({qp_bin})")
        env = dict(os.environ)
        env.update({
            "QUEUE_SERVING_PORT": str(row.port), "USER_PORT": str(BACKEND_PORT),
            "CONTAINER_CONCURRENCY": str(row.cc), "QUEUE_SERVING_TLS_PORT": str(row.tls_port),
            "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "", "SERVING_LOGGING_LEVEL": "",
            "SERVING_NAMESPACE": "default", "SERVING_CONFIGURATION": "hello", "SERVING_REVISION": "hello-00001",
            "SERVING_POD": "hello-pod", "SERVING_POD_IP": "127.0.0.1",
            "QUEUE_ADMIN_PORT": str(row.admin_port), "QUEUE_METRICS_PORT": str(row.metrics_port),
            "QUEUE_USER_METRICS_PORT": str(row.user_metrics_port),
        })
        env.update(row.extra_env)
        name = f"qp-{row.port}"
        p = self.start(name, [str(qp_bin)], env)
        if self.wait_ready(row.port, p):
            self.contenders.append(Contender(row.name, "qp", row.port, p.pid, cc=row.cc))
        else:
            log(f"{row.name} did not answer 200 on :{row.port} within {STARTUP_TIMEOUT:.0f}s; log tail:")
            self.log_tail(name)
            self.stop(p)
            self.n_a(row.name, "qp", row.port,
                     f"did not answer 200 on :{row.port} within {STARTUP_TIMEOUT:.0f}s", cc=row.cc)

    def act_put(self, path: str, doc: dict) -> bool:
        status, body = http_request(ACT.admin_port, path, method="PUT", body=json.dumps(doc),
                                    address=ACT.admin_host, timeout=5)
        if status == 200:
            return True
        log(f"activator admin PUT {path} answered {status or 'nothing'}: {body[:300]}")
        return False

    def start_activator(self) -> None:
        name, act_bin = "activator → queue-proxy cc=0", self.opt.act_bin
        qp = next((c for c in self.contenders if c.kind == "qp" and c.cc == 0), None)
        self.act_qp = qp
        if qp is None:
            self.activator = self.n_a(name, "activator", ACT.port, "no queue-proxy cc=0 row in QP_ROWS")
            return
        if not qp.ok:
            self.activator = self.n_a(name, "activator", ACT.port, f"{qp.name} is not running")
            return
        if not os.access(act_bin, os.X_OK):
            self.activator = self.n_a(name, "activator", ACT.port, f"binary {act_bin} not found")
            return
        if not all(port_free(p) for p in (ACT.port, ACT.metrics_port, ACT.admin_port)):
            self.activator = self.n_a(name, "activator", ACT.port,
                     f"port {ACT.port}, {ACT.metrics_port} or {ACT.admin_port} already in use")
            return
        admin = f"{ACT.admin_host}:{ACT.admin_port}"
        log(f"starting activator on :{ACT.port} (admin {admin}, metrics :{ACT.metrics_port}) "
            f"in front of {qp.name} ({act_bin})")
        p = self.start("activator", [str(act_bin), "--port", str(ACT.port), "--metrics-port",
                                     str(ACT.metrics_port), "--admin-address", admin, "--drain-grace", "0s",
                                     "--pod-name", "activator-bench"])
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while http_request(ACT.admin_port, "/v1/state", address=ACT.admin_host, timeout=1)[0] == 0:
            if time.monotonic() >= deadline or p.poll() is not None:
                break
            time.sleep(0.1)
        rev = f"/v1/revisions/{ACT.namespace}/{ACT.revision}"
        ok = (self.act_put(rev, {"containerConcurrency": 0})
              and self.act_put(rev + "/endpoints", {"addresses": [f"127.0.0.1:{qp.port}"]})
              and self.act_put(f"/v1/routes/{ACT.namespace}/hello",
                               {"hosts": [ACT.host], "traffic": [{"revisionName": ACT.revision, "percent": 100}]})
              and self.wait_ready(ACT.port, p, ACT.host))
        if ok:
            self.activator = Contender(name, "activator", ACT.port, p.pid, host=ACT.host, pid2=qp.pid)
            self.contenders.append(self.activator)
            return
        note = f"did not answer 200 on :{ACT.port} (Host: {ACT.host}) within {STARTUP_TIMEOUT:.0f}s"
        log(f"{name} {note} -> n/a; log tail:")
        self.log_tail("activator")
        self.stop(p)
        self.activator = self.n_a(name, "activator", ACT.port, note)

    # ------------------------------------------------------------------------------ wrk runs ---
    def run_one(self, mode: str, rnd: int, c: Contender, duration: str, conns: int, threads: int) -> None:
        opt = self.opt
        args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency"]
        if c.host:
            args += ["-H", f"Host: {c.host}"]
        if mode == "paced":
            args += ["-s", str(SCRIPT_DIR / "paced.lua")]
        args.append(f"http://127.0.0.1:{c.port}/")
        if mode == "paced":
            args += ["--", str(opt.paced_delay_ms)]
        out = self.tmp / f"wrk-{mode}-{rnd}-{c.port}.txt"
        t0 = cpu_ticks(c.pid) if c.pid else 0
        u0 = cpu_ticks(c.pid2) if c.pid2 else 0
        with open(out, "wb") as f:
            self.wrk = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            rc = self.wrk.wait()
        self.wrk = None
        t1 = cpu_ticks(c.pid) if c.pid else 0
        u1 = cpu_ticks(c.pid2) if c.pid2 else 0
        text = out.read_text(errors="replace")
        if rc != 0:
            log(f"wrk exited with status {rc} for {c.name} (see output below)")
        w = parse_wrk(text)

        def per_request(ticks: int) -> float | None:
            return round(ticks * 1e6 / CLK_TCK / w.requests, 2) if w.requests > 0 else None

        run = Run(mode, rnd, c.name, w.rps, w.p50_ms, w.p99_ms, w.requests, w.non2xx, w.socket_errors,
                  per_request(t1 - t0) if c.pid else None, per_request(u1 - u0) if c.pid2 else None)
        self.runs.append(run)
        qp = f" (+ qp {fmt(run.cpu2_us, 2)})" if c.pid2 else ""
        log(f"{mode:<6} r{rnd} {c.name:<28} {w.rps:9.0f} req/s  p50 {fmt(w.p50_ms, 2):>7} ms  "
            f"p99 {fmt(w.p99_ms, 2):>7} ms  cpu {fmt(run.cpu_us, 2):>7} us/req{qp}  "
            f"non-2xx {w.non2xx}  sock-err {w.socket_errors}")
        if w.requests == 0:
            log("wrk output:")
            print(text, file=sys.stderr)

    def breaker_contenders(self) -> list[Contender | None]:
        return [next((c for c in self.contenders if c.kind == "qp" and c.cc == cc), None) for cc in BREAKER_CC]

    def measure(self) -> None:
        opt = self.opt
        live = [c for c in self.contenders if c.ok]
        if opt.breaker:
            for cc, c in zip(BREAKER_CC, self.breaker_contenders()):
                if c is None:
                    log(f"breaker overhead: no QP_ROWS row with cc={cc} -> n/a")
                elif not c.ok:
                    log(f"breaker overhead: {c.name} is not running -> n/a")
            if opt.breaker_connections > 10:
                log(f"breaker overhead: --breaker-connections {opt.breaker_connections} > 10, "
                    "the cc=10 breaker will queue requests")
        if opt.warmup_enabled:
            log(f"warm-up: {opt.warmup} per contender (discarded)")
            for c in live:
                self.run_one("warmup", 0, c, opt.warmup, opt.connections, opt.threads)
        for r in range(1, opt.rounds + 1):
            log(f"round {r}/{opt.rounds}: saturation ({opt.wrk_cmd})")
            for c in live:
                self.run_one("sat", r, c, opt.duration, opt.connections, opt.threads)
            if opt.paced:
                log(f"round {r}/{opt.rounds}: paced ({opt.wrk_cmd} -s paced.lua -- {opt.paced_delay_ms})")
                for c in live:
                    self.run_one("paced", r, c, opt.duration, opt.connections, opt.threads)
            if opt.breaker:
                log(f"round {r}/{opt.rounds}: breaker overhead ({opt.breaker_wrk_cmd})")
                for c in self.breaker_contenders():
                    if c is not None and c.ok:
                        self.run_one("breaker", r, c, opt.duration, opt.breaker_connections, 1)
        for c in self.contenders:
            if c.pid is not None:
                c.rss_after_kb = status_kb(c.pid, "VmRSS")
                c.hwm_kb = status_kb(c.pid, "VmHWM")

    # ---------------------------------------------------------------------- memory tests ---
    def idle_connections(self) -> None:
        n = self.opt.idle_conns
        if n <= 0:
            return
        c = next((c for c in self.contenders if c.kind == "qp"), None)
        if c is None:
            self.idle_line = f"- queue-proxy with {n} idle keep-alive connections: n/a (no queue-proxy row)"
            return
        if not c.ok:
            self.idle_line = f"- {c.name} with {n} idle keep-alive connections: n/a (not running)"
            return
        log(f"idle connections: opening {n} keep-alive connections to {c.name} "
            f"(bounded to {IDLE_CONNS_TIMEOUT}s)")
        before = status_kb(c.pid, "VmRSS")
        res = self.helper(["idle_conns.py", str(c.port), str(n), str(IDLE_CONNS_TIMEOUT),
                           *map(str, tree_pids(c.pid))], IDLE_CONNS_TIMEOUT + 10)
        log(f"idle connections: {res}")
        m = re.search(r"ok=(\d+) open=(\d+) rss_kb=(\d+)", res)
        if not m:
            self.idle_line = f"- {c.name} with {n} idle keep-alive connections: measurement failed ({res})"
            return
        ok, opened, with_kb = map(int, m.groups())
        per = (with_kb - before) / opened if opened else 0
        self.idle_line = (f"- {c.name} with {n} idle keep-alive connections open ({opened} opened, {ok} answered "
                          f"2xx): **RSS {with_kb / 1024:.1f} MB** ({before / 1024:.1f} MB just before, idle "
                          f"{mb(c.rss_idle_kb)} MB before any load; {per:+.1f} kB per connection)")

    def helper(self, argv: list[str], timeout: float) -> str:
        """Runs one of the helper scripts next to this one; its stdout (stripped), "" on failure."""
        try:
            r = subprocess.run([sys.executable, str(SCRIPT_DIR / argv[0]), *argv[1:]], capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            log(f"{argv[0]} timed out after {timeout:.0f}s")
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return out.strip()
        if r.returncode != 0:
            log(f"{argv[0]} exited with status {r.returncode}: {r.stderr.strip()[-300:]}")
        return r.stdout.strip()

    def held_requests(self) -> None:
        """A revision with no endpoints: the activator must buffer every request. Opens N connections with
        one request each, waits until its queued gauge shows all of them, reads its RSS, closes them."""
        n = self.opt.held_requests
        if not self.opt.activator or n <= 0:
            return
        label = f"activator RSS holding {n:,} requests at zero"
        act = self.activator
        if act is None or not act.ok or act.pid is None:
            self.held_line = f"- {label}: n/a (activator not running)"
            return
        if not self.act_put(f"/v1/revisions/{ACT.namespace}/{ACT.cold_revision}",
                            {"containerConcurrency": 1, "timeoutSeconds": 600}):
            self.held_line = f"- {label}: n/a (admin PUT of {ACT.namespace}/{ACT.cold_revision} failed)"
            return
        log(f"held requests: {n} requests for {ACT.namespace}/{ACT.cold_revision} (no endpoints) to the "
            f"activator (bounded to {HELD_TIMEOUT}s)")
        before = status_kb(act.pid, "VmRSS")
        res = self.helper(["held_requests.py", str(ACT.port), str(n), str(HELD_TIMEOUT),
                           f"http://127.0.0.1:{ACT.metrics_port}/metrics", ACT.namespace, ACT.cold_revision,
                           *map(str, tree_pids(act.pid))], HELD_TIMEOUT + 10)
        log(f"held requests: {res or 'no output'}")
        m = re.search(r"open=(\d+) sent=(\d+) queued=(-?\d+) answered=(\d+) rss_kb=(\d+) secs=(\S+)", res)
        if m:
            opened, queued, answered, with_kb = (int(m.group(i)) for i in (1, 3, 4, 5))
            secs = m.group(6)
            if queued >= n:
                line = (f"- {label}: **{with_kb / 1024:.1f} MB** (target ≤ 40 MB); idle RSS "
                        f"{mb(act.rss_idle_kb)} MB before any load, {before / 1024:.1f} MB just before; "
                        f"{(with_kb - before) / n:+.2f} kB per held request; all {n:,} queued after {secs} s")
            else:
                line = (f"- {label}: not reached within the time limit (queued gauge {queued}, {opened} "
                        f"connections opened, {answered} answered or closed by the activator; RSS then "
                        f"{with_kb / 1024:.1f} MB)")
            if answered > 0:
                line += f" — **{answered} connection(s) were answered or closed by the activator**"
        else:
            line = f"- {label}: measurement failed ({res or 'no output'})"
        # The connections are closed: the activator drops the requests, and once the burst is over (a
        # quiet second after the first one) its loop hands the freed memory back (malloc_trim).
        time.sleep(1)
        line += f"; {status_kb(act.pid, 'VmRSS') / 1024:.1f} MB 1 s after closing them"
        time.sleep(2)
        line += f", {status_kb(act.pid, 'VmRSS') / 1024:.1f} MB 3 s after"
        self.held_line = line

    # ----------------------------------------------------------------------------- report ---
    def of(self, mode: str, c: Contender) -> list[Run]:
        return [r for r in self.runs if r.mode == mode and r.contender == c.name]

    def median(self, mode: str, c: Contender | None, attr: str) -> float | None:
        return med([getattr(r, attr) for r in self.of(mode, c)]) if c is not None and c.ok else None

    def median_total_cpu(self, mode: str, c: Contender) -> float | None:
        return med([r.cpu_us + r.cpu2_us for r in self.of(mode, c)
                    if r.cpu_us is not None and r.cpu2_us is not None])

    def total(self, mode: str, c: Contender, attr: str) -> str:
        runs = self.of(mode, c)
        return str(sum(getattr(r, attr) for r in runs)) if runs else "-"

    def kind(self, kind: str) -> Contender | None:
        return next((c for c in self.contenders if c.kind == kind), None)

    def header(self) -> list[str]:
        opt = self.opt
        commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]).strip()
        if not re.fullmatch(r"[0-9a-f]{4,40}", commit):
            commit = "uncommitted"
        elif run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                       ":(exclude)benchmarks/RESULTS.md"]).strip():
            commit += " (+ uncommitted changes)"
        wrk_ver = (run_text(["wrk", "-v"]).split() + ["?", "?"])[1]
        nginx_ver = (re.findall(r"nginx/(\S+)", run_text(["nginx", "-v"])) or ["?"])[0]
        haproxy_ver = (run_text(["haproxy", "-v"]).split() + ["?"] * 3)[2]
        cc_ver = run_text(["cc", "-dumpfullversion"]).strip() or "?"
        try:
            debian = Path("/etc/debian_version").read_text().strip()
        except OSError:
            debian = "?"
        qp_desc = (".build/release/queue-proxy" if opt.qp_bin == QP_BIN_DEFAULT
                   else f"{opt.qp_bin} (QP_BIN override)")
        warm = f"one discarded {opt.warmup} warm-up run each" if opt.warmup_enabled else "no warm-up"
        lines = [
            "# queue-proxy benchmark results",
            "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
            f"- commit: {commit}",
            f"- machine: nproc {len(os.sched_getaffinity(0))}, kernel {platform.release()}, Debian {debian}",
            f"- load average before the run (1, 5, 15 min): {self.loadavg}; the machine is shared, and other "
            "work raises every contender's µs/req: compare ratios",
            f"- tools: wrk {wrk_ver}, nginx {nginx_ver}, HAProxy {haproxy_ver}, cc {cc_ver}",
            f"- backend: nginx, 1 worker, `return 200 \"Hello World!\\n\";` on 127.0.0.1:{BACKEND_PORT}; "
            "all contenders proxy to it",
            f"- queue-proxy binary: {qp_desc}",
            f"- floor: `{self.floor_desc()}` built with `cc -O2`, on :{FLOOR_PORT}: one thread, epoll, a dedicated "
            "upstream connection per client, bytes relayed as they come, no parsing — what the kernel charges "
            "any read/write proxy per request; ÷ floor columns divide by its medians",
            f"- load: `{opt.wrk_cmd}`, {opt.rounds} round(s), contenders alternated within each round, {warm}; "
            "figures are medians over rounds, ratios are ratios of medians",
        ]
        if opt.paced:
            lines.append(f"- paced load: the same with `-s benchmarks/paced.lua -- {opt.paced_delay_ms}` "
                         f"({opt.paced_delay_ms} ms pause per connection before each request, "
                         f"≤ {opt.connections * 1000 // opt.paced_delay_ms} req/s offered)")
        if opt.activator:
            act_bin = str(opt.act_bin)
            if act_bin.startswith(str(REPO_ROOT) + "/"):
                act_bin = act_bin[len(str(REPO_ROOT)) + 1:]
            lines.append(f"- activator: `{act_bin}` on :{ACT.port}, revision {ACT.namespace}/{ACT.revision} "
                         "(containerConcurrency 0) with one endpoint, the queue-proxy cc=0 instance above; wrk "
                         f"sends `Host: {ACT.host}` (a route); for its row the activator's CPU and the "
                         "queue-proxy's CPU are measured separately")
        if opt.breaker:
            lines.append(f"- breaker-overhead load: `{opt.breaker_wrk_cmd}` against the queue-proxy cc=0 and "
                         "cc=10 instances above, in the same rounds")
        lines.append("- CPU µs/req: utime+stime of the proxy's process tree (/proc/PID/stat) over the run ÷ "
                     "requests completed; RSS: VmRSS (peak: VmHWM) summed over the process tree (nginx = master "
                     "+ worker)")
        return lines

    def floor_desc(self) -> str:
        src = self.opt.floor_src.resolve()
        for base, prefix in ((REPO_ROOT.parent, "../"), (REPO_ROOT, "")):
            try:
                return prefix + str(src.relative_to(base))
            except ValueError:
                pass
        return str(src)

    def saturation(self) -> list[str]:
        direct, floor, haproxy = self.kind("direct"), self.kind("floor"), self.kind("haproxy")
        d_rps = self.median("sat", direct, "rps")
        f_rps, f_cpu = self.median("sat", floor, "rps"), self.median("sat", floor, "cpu_us")
        h_rps, h_cpu = self.median("sat", haproxy, "rps"), self.median("sat", haproxy, "cpu_us")
        out = [
            "## Saturation",
            "",
            "| contender | req/s | ÷ direct | ÷ HAProxy | ÷ floor | p50 ms | p99 ms | CPU µs/req | CPU ÷ HAProxy "
            "| CPU ÷ floor | idle RSS MB | RSS after MB | peak RSS MB | non-2xx | socket errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in self.contenders:
            if not c.ok:
                out.append(f"| {c.name} |" + " n/a |" * 14)
                continue
            rps, cpu = self.median("sat", c, "rps"), self.median("sat", c, "cpu_us")
            out.append("| " + " | ".join([
                c.name, fmt(rps, 0), ratio(rps, d_rps), ratio(rps, h_rps), ratio(rps, f_rps),
                fmt(self.median("sat", c, "p50_ms"), 2), fmt(self.median("sat", c, "p99_ms"), 2),
                fmt(cpu, 1), ratio(cpu, h_cpu), ratio(cpu, f_cpu),
                mb(c.rss_idle_kb), mb(c.rss_after_kb), mb(c.hwm_kb),
                self.total("sat", c, "non2xx"), self.total("sat", c, "socket_errors")]) + " |")
        out += [
            "| Knative's Go queue-proxy, cc=0 — reference (not measured in this run) | | 0.16 | | | | ~22 | ~200 "
            "| | | 23–25 | | | | |",
            "| Knative's Go queue-proxy, cc=10 — reference (not measured in this run) | | 0.14 | | | | ~42 | ~210 "
            "| | | 23–25 | | | | |",
            "",
            "Targets (BENCHMARKING.md): CPU ÷ floor ≤ 1.25 and CPU ÷ HAProxy ≤ 0.8 with every feature on and no "
            "non-2xx, p99 no worse than HAProxy's, idle RSS ≤ 5 MB.",
        ]
        qp = next((c for c in self.contenders if c.kind == "qp" and c.cc == 0 and c.ok), None)
        if qp is not None:
            cpu = self.median("sat", qp, "cpu_us")
            out.append(f"{qp.name} at saturation: CPU ÷ floor **{ratio(cpu, f_cpu)}**, CPU ÷ HAProxy "
                       f"**{ratio(cpu, h_cpu)}** (same run; {fmt(cpu, 1)} vs {fmt(f_cpu, 1)} and "
                       f"{fmt(h_cpu, 1)} µs/req).")
        for c in self.contenders:
            if c.note:
                out.append(f"{c.name}: n/a — {c.note}.")
        act = self.activator
        if act is not None and act.ok:
            out.append(f"{act.name}: CPU µs/req, CPU ÷ HAProxy, CPU ÷ floor and RSS are the activator's alone; "
                       f"the queue-proxy behind it adds {fmt(self.median('sat', act, 'cpu2_us'), 1)} µs/req "
                       f"(total {fmt(self.median_total_cpu('sat', act), 1)} µs/req, see *Activator in the path*).")
        return out

    def paced_table(self) -> list[str]:
        floor, haproxy = self.kind("floor"), self.kind("haproxy")
        h_p99, h_cpu = self.median("paced", haproxy, "p99_ms"), self.median("paced", haproxy, "cpu_us")
        f_cpu = self.median("paced", floor, "cpu_us")
        out = [
            "## Paced (latency below saturation)",
            "",
            "| contender | req/s | p50 ms | p99 ms | p99 ÷ HAProxy | CPU µs/req | CPU ÷ HAProxy | CPU ÷ floor "
            "| non-2xx | socket errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in self.contenders:
            if not c.ok:
                out.append(f"| {c.name} |" + " n/a |" * 9)
                continue
            p99, cpu = self.median("paced", c, "p99_ms"), self.median("paced", c, "cpu_us")
            out.append("| " + " | ".join([
                c.name, fmt(self.median("paced", c, "rps"), 0), fmt(self.median("paced", c, "p50_ms"), 2),
                fmt(p99, 2), ratio(p99, h_p99), fmt(cpu, 1), ratio(cpu, h_cpu), ratio(cpu, f_cpu),
                self.total("paced", c, "non2xx"), self.total("paced", c, "socket_errors")]) + " |")
        return out

    def breaker_table(self) -> list[str]:
        n = self.opt.breaker_connections
        title = (f"## Breaker overhead (wrk -c{n}: the breaker admits every request at once)" if n <= 10 else
                 f"## Breaker overhead (wrk -c{n}: more than cc=10, so the breaker queues — not a pure "
                 "overhead figure)")
        out = [title, "", "| contender | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | socket errors |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        cpus = []
        for cc, c in zip(BREAKER_CC, self.breaker_contenders()):
            cpu = self.median("breaker", c, "cpu_us")
            cpus.append(cpu)
            if c is None or not c.ok:
                out.append(f"| {c.name if c else f'queue-proxy cc={cc}'} |" + " n/a |" * 6)
                continue
            out.append("| " + " | ".join([
                c.name, fmt(self.median("breaker", c, "rps"), 0), fmt(self.median("breaker", c, "p50_ms"), 2),
                fmt(self.median("breaker", c, "p99_ms"), 2), fmt(cpu, 1),
                self.total("breaker", c, "non2xx"), self.total("breaker", c, "socket_errors")]) + " |")
        out.append("")
        if cpus[0] and cpus[1] is not None:
            out.append(f"breaker + stats cost: {(cpus[1] / cpus[0] - 1) * 100:+.1f} % CPU/request over cc=0")
        else:
            out.append("breaker + stats cost: n/a (needs both the cc=0 and the cc=10 rows with a CPU figure)")
        return out

    def activator_table(self) -> list[str]:
        direct, qp, act = self.kind("direct"), self.act_qp, self.activator
        d_rps = self.median("sat", direct, "rps")
        out = [
            "## Activator in the path",
            "",
            f"Saturation medians of the same runs as above (`{self.opt.wrk_cmd}`). CPU µs/req per process; "
            "total = activator + queue-proxy (median of the per-run sums).",
            "",
            "| path | req/s | ÷ direct | p50 ms | p99 ms | activator CPU µs/req | queue-proxy CPU µs/req "
            "| total CPU µs/req | non-2xx | socket errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            "| " + " | ".join([
                "direct → app", fmt(d_rps, 0), "1.00", fmt(self.median("sat", direct, "p50_ms"), 2),
                fmt(self.median("sat", direct, "p99_ms"), 2), "—", "—", "—",
                self.total("sat", direct, "non2xx"), self.total("sat", direct, "socket_errors")]) + " |",
        ]
        if qp is not None and qp.ok:
            rps, cpu = self.median("sat", qp, "rps"), self.median("sat", qp, "cpu_us")
            out.append("| " + " | ".join([
                f"{qp.name} → app", fmt(rps, 0), ratio(rps, d_rps), fmt(self.median("sat", qp, "p50_ms"), 2),
                fmt(self.median("sat", qp, "p99_ms"), 2), "—", fmt(cpu, 1), fmt(cpu, 1),
                self.total("sat", qp, "non2xx"), self.total("sat", qp, "socket_errors")]) + " |")
        else:
            out.append("| queue-proxy cc=0 → app |" + " n/a |" * 9)
        if act is not None and act.ok:
            rps = self.median("sat", act, "rps")
            out.append("| " + " | ".join([
                "activator → queue-proxy cc=0 → app", fmt(rps, 0), ratio(rps, d_rps),
                fmt(self.median("sat", act, "p50_ms"), 2), fmt(self.median("sat", act, "p99_ms"), 2),
                fmt(self.median("sat", act, "cpu_us"), 1), fmt(self.median("sat", act, "cpu2_us"), 1),
                fmt(self.median_total_cpu("sat", act), 1),
                self.total("sat", act, "non2xx"), self.total("sat", act, "socket_errors")]) + " |")
        else:
            out.append("| activator → queue-proxy cc=0 → app |" + " n/a |" * 9)
        if act is not None and act.note:
            out += ["", f"activator: n/a — {act.note}."]
        if self.held_line:
            out += ["", self.held_line]
        return out

    def all_runs(self) -> list[str]:
        out = ["## All runs", "",
               "| run | round | contender | req/s | p50 ms | p99 ms | requests | CPU µs/req | non-2xx | socket errors |",
               "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.runs:
            if r.mode == "warmup":
                continue
            cpu = fmt(r.cpu_us, 1) + (f" + qp {fmt(r.cpu2_us, 1)}" if r.cpu2_us is not None else "")
            out.append(f"| {r.mode} | {r.round} | {r.contender} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 2)} | "
                       f"{fmt(r.p99_ms, 2)} | {r.requests} | {cpu} | {r.non2xx} | {r.socket_errors} |")
        return out

    def report(self) -> str:
        opt = self.opt
        sections = [self.header(), self.saturation()]
        if opt.paced:
            sections.append(self.paced_table())
        if opt.breaker:
            sections.append(self.breaker_table())
        if opt.activator:
            sections.append(self.activator_table())
        if self.idle_line:
            sections.append(["## Idle connections", "", self.idle_line])
        warm_err = sum(r.non2xx + r.socket_errors for r in self.runs if r.mode == "warmup")
        if warm_err:
            sections.append([f"**Warning:** the discarded warm-up runs saw {warm_err} non-2xx responses / "
                             "socket errors."])
        sections.append(self.all_runs())
        return "\n\n".join("\n".join(s) for s in sections) + "\n"

    def run(self) -> None:
        self.start_contenders()
        self.measure()
        self.idle_connections()
        self.held_requests()
        (self.tmp / "runs.json").write_text(json.dumps([asdict(r) for r in self.runs], indent=1))
        report = self.report()
        write_report(self.opt.out, report)
        print(report, end="")
        log(f"report written to {self.opt.out}")


def write_report(out: Path, report: str) -> None:
    """Writes REPORT to OUT, keeping the sections of the old file that other scripts wrote."""
    try:
        old = out.read_text()
    except FileNotFoundError:
        old = ""
    kept = [s.rstrip("\n") + "\n" for s in re.split(r"(?m)^(?=## )", old)
            if s.startswith("## ") and not s.startswith(OWN_SECTIONS)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.rstrip("\n") + "\n" + "".join("\n" + k for k in kept))


# -------------------------------------------------------------------------------- entry point ---
def parse_args(argv: list[str]) -> tuple[Options, bool]:
    def positive(s: str) -> int:
        if not re.fullmatch(r"[1-9][0-9]*", s):
            raise argparse.ArgumentTypeError("must be a positive integer")
        return int(s)

    def non_negative(s: str) -> int:
        if not re.fullmatch(r"[0-9]+", s):
            raise argparse.ArgumentTypeError("must be a non-negative integer")
        return int(s)

    p = argparse.ArgumentParser(
        prog="sudo bash benchmarks/run.sh",
        description="Side-by-side HTTP/1 benchmark of queue-proxy against direct access, the floor (a bare C "
                    "epoll relay), nginx and HAProxy, plus the activator in front of queue-proxy and its "
                    "memory holding requests at zero (BENCHMARKING.md's method). Writes benchmarks/RESULTS.md.",
        epilog="Environment: QP_BIN=/path/to/binary overrides .build/release/queue-proxy, ACT_BIN=/path/to/binary "
               "overrides .build/release/activator. Must run as root (it unshares a private network namespace "
               "and may apt-get install wrk, nginx, haproxy, gcc).")
    p.add_argument("--rounds", type=positive, default=3, metavar="N",
                   help="measurement rounds, contenders alternated in each (default %(default)s)")
    p.add_argument("--duration", default="10s", metavar="D", help="wrk duration per run, e.g. 10s (default %(default)s)")
    p.add_argument("--warmup", default="2s", metavar="D",
                   help="one discarded wrk run per contender before round 1, 0 to skip (default %(default)s)")
    p.add_argument("--connections", type=positive, default=50, metavar="N", help="wrk -c (default %(default)s)")
    p.add_argument("--threads", type=positive, default=1, metavar="N", help="wrk -t (default %(default)s)")
    p.add_argument("--paced-delay-ms", type=positive, default=10, metavar="N",
                   help="per-connection delay before each request in the paced runs (default %(default)s)")
    p.add_argument("--no-paced", dest="paced", action="store_false", help="skip the paced (latency) runs")
    p.add_argument("--breaker-connections", type=positive, default=10, metavar="N",
                   help="wrk -c of the breaker-overhead runs (queue-proxy cc=0 vs cc=10 at a load the breaker "
                        "admits at once; default %(default)s)")
    p.add_argument("--no-breaker", dest="breaker", action="store_false", help="skip the breaker-overhead runs")
    p.add_argument("--idle-conns", type=non_negative, default=1000, metavar="N",
                   help="idle keep-alive connections for the memory test, 0 to skip (default %(default)s)")
    p.add_argument("--no-activator", dest="activator", action="store_false",
                   help="skip the activator rows (activator → queue-proxy cc=0, and its held-requests memory)")
    p.add_argument("--held-requests", type=non_negative, default=10000, metavar="N",
                   help="requests the activator holds for a revision at zero in its memory test, 0 to skip "
                        f"(default %(default)s; bounded to {HELD_TIMEOUT}s)")
    p.add_argument("--floor-src", type=Path, default=FLOOR_SRC_DEFAULT, metavar="FILE",
                   help="the floor contender's C source, built with cc -O2 (default ../shared/bench/floor.c)")
    p.add_argument("--no-build", dest="build", action="store_false",
                   help="do not run 'swift build -c release -Xswiftc -static-executable' first")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE",
                   help="markdown report (default benchmarks/RESULTS.md)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, raw wrk output)")
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # run.sh's phase outside the netns
    a = p.parse_args(argv)
    opt = Options(
        rounds=a.rounds, duration=a.duration, warmup=a.warmup, connections=a.connections, threads=a.threads,
        paced=a.paced, paced_delay_ms=a.paced_delay_ms, breaker=a.breaker,
        breaker_connections=a.breaker_connections, idle_conns=a.idle_conns, activator=a.activator,
        held_requests=a.held_requests, build=a.build, out=a.out.absolute(), keep_tmp=a.keep_tmp,
        floor_src=a.floor_src.absolute(),
        qp_bin=Path(os.environ.get("QP_BIN") or QP_BIN_DEFAULT),
        act_bin=Path(os.environ.get("ACT_BIN") or ACT_BIN_DEFAULT))
    return opt, a.prepare


def prepare(opt: Options) -> None:
    """Outside the namespace: install what is missing, build the release binaries."""
    needed = {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy", "ip": "iproute2",
              "unshare": "util-linux", "cc": "gcc"}
    missing = [pkg for cmd, pkg in needed.items() if shutil.which(cmd) is None]
    if missing:
        log(f"installing: {' '.join(missing)}")
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if opt.build:
        log(f"building: swift build -c release -Xswiftc -static-executable (in {REPO_ROOT})")
        subprocess.run(["swift", "build", "-c", "release", "-Xswiftc", "-static-executable"], check=True,
                       cwd=REPO_ROOT)


def in_private_netns() -> bool:
    """True when the only network interface is lo (run.sh's `unshare -n`)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return all(line.split(":")[0].strip() == "lo" for line in lines)


def main(argv: list[str]) -> int:
    opt, prepare_only = parse_args(argv)
    if os.geteuid() != 0:
        log("ERROR: must run as root (network namespace, package installation): sudo bash benchmarks/run.sh")
        return 1
    if prepare_only:
        prepare(opt)
        return 0
    if not in_private_netns():
        log("ERROR: not in a private network namespace; start the benchmark with benchmarks/run.sh")
        return 1
    if os.environ.get("BENCH_PHASE1_DONE") != "1":
        prepare(opt)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((65536, max(hard, 65536)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(opt)
    failed = True
    try:
        bench.run()
        failed = False
    except BenchError as e:
        log(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        bench.cleanup(failed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
