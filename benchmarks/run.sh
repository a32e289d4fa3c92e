#!/usr/bin/env bash
# Side-by-side benchmark of queue-proxy against direct access, nginx and HAProxy
# (plus the activator in front of queue-proxy, and its memory holding requests at zero),
# following /work/shared/BENCHMARKING.md (same backend, alternated runs, medians
# and ratios, private network namespace, CPU µs per request from /proc).
#
#   sudo bash benchmarks/run.sh [--rounds 3] [--duration 10s] [--no-build] [--out FILE]
#
# Run `bash benchmarks/run.sh --help` for all options.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- options ---
ROUNDS=3
DURATION=10s
WARMUP=2s
THREADS=1
CONNECTIONS=50
PACED=1
PACED_DELAY_MS=10
IDLE_CONNS=1000
IDLE_CONNS_TIMEOUT=30
BREAKER=1
BREAKER_CONNECTIONS=10
STARTUP_TIMEOUT=20
ACTIVATOR=1
HELD_REQUESTS=10000
HELD_TIMEOUT=60
BUILD=1
KEEP_TMP=0
OUT="$REPO_ROOT/benchmarks/RESULTS.md"

# queue-proxy binary. QP_BIN may point at another program (e.g. Knative's Go
# queue-proxy for a side-by-side run, or a stand-in while testing the harness).
QP_BIN_DEFAULT="$REPO_ROOT/.build/release/queue-proxy"
QP_BIN="${QP_BIN:-$QP_BIN_DEFAULT}"

# queue-proxy contenders: one entry per row, easy to extend.
#   name | serving port | CONTAINER_CONCURRENCY | admin port | metrics port | user metrics port | TLS port | extra env (K=V K=V ...)
# The first entry is also the target of the idle-connections memory test.
QP_ROWS=(
  "queue-proxy cc=0|8012|0|8022|9090|9091|8112|"
  # 8013 is Knative's port for h2c revisions, where queue-proxy speaks h2c to the app by default: the nginx
  # backend speaks HTTP/1.1, so say so.
  "queue-proxy cc=10|8013|10|8023|9092|9093|8113|QUEUE_USER_PROTOCOL=http1"
)

BACKEND_PORT=8080
NGINX_PROXY_PORT=8081
HAPROXY_PORT=8082

# Activator contender: in front of the first QP_ROWS row with cc=0, requests routed by Host.
ACT_BIN="${ACT_BIN:-$REPO_ROOT/.build/release/activator}"
ACT_PORT=8014
ACT_METRICS_PORT=9094
ACT_ADMIN=127.0.0.1:8090
ACT_NS=default
ACT_REV=hello-00001        # revision in front of queue-proxy cc=0
ACT_HOST=hello.default.example.com
ACT_COLD_REV=cold-00001    # revision with no endpoints, for the held-requests memory test

usage() {
  cat <<EOF
Usage: sudo bash benchmarks/run.sh [options]

  --rounds N            measurement rounds, contenders alternated in each (default $ROUNDS)
  --duration D          wrk duration per run, e.g. 10s (default $DURATION)
  --warmup D            one discarded wrk run per contender before round 1, 0 to skip (default $WARMUP)
  --connections N       wrk -c (default $CONNECTIONS)
  --threads N           wrk -t (default $THREADS)
  --paced-delay-ms N    per-connection delay before each request in the paced runs (default $PACED_DELAY_MS)
  --no-paced            skip the paced (latency) runs
  --breaker-connections N
                        wrk -c of the breaker-overhead runs (queue-proxy cc=0 vs cc=10 at a
                        load the breaker admits at once; default $BREAKER_CONNECTIONS)
  --no-breaker          skip the breaker-overhead runs
  --idle-conns N        idle keep-alive connections for the memory test, 0 to skip (default $IDLE_CONNS)
  --no-activator        skip the activator rows (activator → queue-proxy cc=0, and its held-requests memory)
  --held-requests N     requests the activator holds for a revision at zero in its memory test,
                        0 to skip (default $HELD_REQUESTS; bounded to ${HELD_TIMEOUT}s)
  --no-build            do not run 'swift build -c release' first
  --out FILE            markdown report (default benchmarks/RESULTS.md)
  --keep-tmp            keep the temp dir (configs, logs, raw wrk output)
  -h, --help            this text

Environment: QP_BIN=/path/to/binary overrides .build/release/queue-proxy,
ACT_BIN=/path/to/binary overrides .build/release/activator.
Must run as root (it unshares a private network namespace and may apt-get install wrk, nginx, haproxy).
EOF
}

ORIG_ARGS=("$@")
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --paced-delay-ms) PACED_DELAY_MS=$2; shift 2 ;;
    --no-paced) PACED=0; shift ;;
    --breaker-connections) BREAKER_CONNECTIONS=$2; shift 2 ;;
    --no-breaker) BREAKER=0; shift ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --no-activator) ACTIVATOR=0; shift ;;
    --held-requests) HELD_REQUESTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --rounds must be a positive integer" >&2; exit 2; }
[[ "$PACED_DELAY_MS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --paced-delay-ms must be a positive integer" >&2; exit 2; }
[[ "$BREAKER_CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --breaker-connections must be a positive integer" >&2; exit 2; }
[[ "$HELD_REQUESTS" =~ ^[0-9]+$ ]] || { echo "run.sh: --held-requests must be a non-negative integer" >&2; exit 2; }
[[ "$OUT" = /* ]] || OUT="$PWD/$OUT"

# -------------------------------------------- phase 1: outside the netns ---
ensure_packages() {
  install_missing wrk:wrk nginx:nginx-light haproxy:haproxy ip:iproute2 unshare:util-linux curl:curl python3:python3
}

if [[ "$(id -u)" != 0 ]]; then
  die "must run as root (network namespace, package installation): sudo bash $0 ${ORIG_ARGS[*]}"
fi

if [[ "${BENCH_PHASE1_DONE:-}" != 1 ]]; then
  ensure_packages
  ((BUILD)) && build_release
  export BENCH_PHASE1_DONE=1
fi

enter_private_netns

# ---------------------------------------------- phase 2: inside the netns ---
ip link set lo up 2>/dev/null || true
cd "$REPO_ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/qp-bench.XXXXXX)
chmod 755 "$TMP"   # nginx workers run as an unprivileged user
RAW="$TMP/raw.tsv"
: >"$RAW"

STARTED_PIDS=()   # every long-running process we started (trees are killed)
WRK_PID=""
HELPER_PID=""     # a running helper script (held_requests.py)

# Stop a process tree we started and drop it from the cleanup list.
stop_started() {
  local p keep=()
  kill_tree "$1"
  for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  [[ -n "$WRK_PID" ]] && kill_tree "$WRK_PID"
  [[ -n "$HELPER_PID" ]] && kill_tree "$HELPER_PID"
  for p in "${STARTED_PIDS[@]}"; do kill_tree "$p"; done
  wait 2>/dev/null || true
  if ((rc != 0)); then
    for p in "$TMP"/*.log "$TMP"/*/logs/error.log; do
      [[ -s "$p" ]] || continue
      log "last lines of $p:"
      tail -n 15 "$p" >&2 || true
    done
  fi
  if ((KEEP_TMP)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait until http://127.0.0.1:PORT/ answers 200 (with Host: HOST if given); fail early if PID died.
wait_ready() {
  local port=$1 pid=${2:-} host=${3:-} deadline code hdr=()
  [[ -n "$host" ]] && hdr=(-H "Host: $host")
  deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${hdr[@]}" "http://127.0.0.1:$port/" 2>/dev/null || true)
    [[ "$code" == 200 ]] && return 0
    sleep 0.2
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_nginx() {   # name conf → LAST_PID
  local name=$1 conf=$2 prefix="$TMP/$1"
  mkdir -p "$prefix/logs" "$prefix/tmp"
  nginx -t -q -p "$prefix/" -e stderr -c "$conf" || die "nginx config $conf does not validate"
  nginx -p "$prefix/" -e stderr -c "$conf" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# --------------------------------------------------------- contenders ---
# Parallel arrays, one index per contender, in the order they are alternated.
# C_HOST: Host header wrk sends ("" = default). C_PID2: a second process (tree) whose CPU is
# measured too, reported separately (the queue-proxy behind the activator).
C_NAME=() C_PORT=() C_PID=() C_KIND=() C_STATUS=() C_NOTE=() C_HOST=() C_PID2=()
add_contender() {
  C_NAME+=("$1"); C_PORT+=("$2"); C_PID+=("$3"); C_KIND+=("$4"); C_STATUS+=("$5"); C_NOTE+=("${6:-}")
  C_HOST+=("${7:-}"); C_PID2+=("${8:-}")
}
# Breaker-overhead runs: the contender indices of the first QP_ROWS rows with cc=0 and cc=10.
BRK_CC=(0 10)
BRK_IDX=(-1 -1)

for port in "$BACKEND_PORT" "$NGINX_PROXY_PORT" "$HAPROXY_PORT"; do
  port_free "$port" || die "port $port is already in use inside the namespace"
done

log "starting backend: nginx on :$BACKEND_PORT"
start_nginx nginx-backend "$SCRIPT_DIR/nginx-backend.conf"
BACKEND_PID=$LAST_PID
wait_ready "$BACKEND_PORT" "$BACKEND_PID" || die "backend nginx did not answer on :$BACKEND_PORT"
add_contender "direct" "$BACKEND_PORT" "" direct ok

for row in "${QP_ROWS[@]}"; do
  IFS='|' read -r q_name q_port q_cc q_admin q_metrics q_umetrics q_tls q_extra <<<"$row"
  for b in "${!BRK_CC[@]}"; do
    if [[ "$q_cc" == "${BRK_CC[b]}" ]] && ((BRK_IDX[b] < 0)); then BRK_IDX[b]=${#C_NAME[@]}; fi
  done
  if [[ ! -x "$QP_BIN" ]]; then
    log "$q_name: $QP_BIN not found or not executable -> n/a"
    add_contender "$q_name" "$q_port" "" qp "n/a" "binary $QP_BIN not found"
    continue
  fi
  if ! port_free "$q_port"; then
    log "$q_name: port $q_port already in use -> n/a"
    add_contender "$q_name" "$q_port" "" qp "n/a" "port $q_port already in use"
    continue
  fi
  log "starting $q_name on :$q_port ($QP_BIN)"
  # shellcheck disable=SC2086
  env QUEUE_SERVING_PORT="$q_port" USER_PORT="$BACKEND_PORT" CONTAINER_CONCURRENCY="$q_cc" \
      QUEUE_SERVING_TLS_PORT="$q_tls" REVISION_TIMEOUT_SECONDS=300 \
      SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL= \
      SERVING_NAMESPACE=default SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 \
      SERVING_POD=hello-pod SERVING_POD_IP=127.0.0.1 \
      QUEUE_ADMIN_PORT="$q_admin" QUEUE_METRICS_PORT="$q_metrics" QUEUE_USER_METRICS_PORT="$q_umetrics" \
      $q_extra "$QP_BIN" >"$TMP/qp-$q_port.log" 2>&1 &
  q_pid=$!
  STARTED_PIDS+=("$q_pid")
  if wait_ready "$q_port" "$q_pid"; then
    add_contender "$q_name" "$q_port" "$q_pid" qp ok
  else
    log "$q_name did not answer 200 on :$q_port within ${STARTUP_TIMEOUT}s -> n/a; log tail:"
    tail -n 10 "$TMP/qp-$q_port.log" >&2 || true
    stop_started "$q_pid"
    add_contender "$q_name" "$q_port" "" qp "n/a" "did not answer 200 on :$q_port within ${STARTUP_TIMEOUT}s"
  fi
done

# ------------------------------------------------- activator contender ---
# activator (:$ACT_PORT) → the first queue-proxy cc=0 row → backend, routed by Host: $ACT_HOST.
ACT_IDX=-1 ACT_QP_IDX=-1 ACT_PID=""
act_put() {   # act_put PATH JSON: PUT to the activator's admin API, succeed on 200
  local code
  code=$(curl -s -o "$TMP/act-admin.out" -w '%{http_code}' --max-time 5 -X PUT -d "$2" "http://$ACT_ADMIN$1" 2>/dev/null || true)
  [[ "$code" == 200 ]] && return 0
  log "activator admin PUT $1 answered ${code:-nothing}: $(head -c 300 "$TMP/act-admin.out" 2>/dev/null)"
  return 1
}
if ((ACTIVATOR)); then
  act_name="activator → queue-proxy cc=0"
  ACT_QP_IDX=${BRK_IDX[0]}   # the first QP_ROWS row with cc=0
  ACT_IDX=${#C_NAME[@]}
  if ((ACT_QP_IDX < 0)); then
    log "$act_name: no queue-proxy cc=0 row -> n/a"
    add_contender "$act_name" "$ACT_PORT" "" activator "n/a" "no queue-proxy cc=0 row in QP_ROWS"
  elif [[ "${C_STATUS[ACT_QP_IDX]}" != ok ]]; then
    log "$act_name: ${C_NAME[ACT_QP_IDX]} is not running -> n/a"
    add_contender "$act_name" "$ACT_PORT" "" activator "n/a" "${C_NAME[ACT_QP_IDX]} is not running"
  elif [[ ! -x "$ACT_BIN" ]]; then
    log "$act_name: $ACT_BIN not found or not executable -> n/a"
    add_contender "$act_name" "$ACT_PORT" "" activator "n/a" "binary $ACT_BIN not found"
  elif ! port_free "$ACT_PORT" || ! port_free "$ACT_METRICS_PORT" || ! port_free "${ACT_ADMIN##*:}"; then
    log "$act_name: port $ACT_PORT, $ACT_METRICS_PORT or ${ACT_ADMIN##*:} already in use -> n/a"
    add_contender "$act_name" "$ACT_PORT" "" activator "n/a" "port $ACT_PORT, $ACT_METRICS_PORT or ${ACT_ADMIN##*:} already in use"
  else
    log "starting activator on :$ACT_PORT (admin $ACT_ADMIN, metrics :$ACT_METRICS_PORT) in front of ${C_NAME[ACT_QP_IDX]} ($ACT_BIN)"
    "$ACT_BIN" --port "$ACT_PORT" --metrics-port "$ACT_METRICS_PORT" --admin-address "$ACT_ADMIN" \
      --drain-grace 0s --pod-name activator-bench >"$TMP/activator.log" 2>&1 &
    ACT_PID=$!
    STARTED_PIDS+=("$ACT_PID")
    act_ok=0
    deadline=$((SECONDS + STARTUP_TIMEOUT))
    until curl -s -o /dev/null --max-time 1 "http://$ACT_ADMIN/v1/state" 2>/dev/null; do
      if ((SECONDS >= deadline)) || ! kill -0 "$ACT_PID" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if act_put "/v1/revisions/$ACT_NS/$ACT_REV" '{"containerConcurrency": 0}' &&
       act_put "/v1/revisions/$ACT_NS/$ACT_REV/endpoints" "{\"addresses\": [\"127.0.0.1:${C_PORT[ACT_QP_IDX]}\"]}" &&
       act_put "/v1/routes/$ACT_NS/hello" "{\"hosts\": [\"$ACT_HOST\"], \"traffic\": [{\"revisionName\": \"$ACT_REV\", \"percent\": 100}]}" &&
       wait_ready "$ACT_PORT" "$ACT_PID" "$ACT_HOST"; then
      act_ok=1
    fi
    if ((act_ok)); then
      add_contender "$act_name" "$ACT_PORT" "$ACT_PID" activator ok "" "$ACT_HOST" "${C_PID[ACT_QP_IDX]}"
    else
      log "$act_name did not answer 200 on :$ACT_PORT (Host: $ACT_HOST) within ${STARTUP_TIMEOUT}s -> n/a; log tail:"
      tail -n 10 "$TMP/activator.log" >&2 || true
      stop_started "$ACT_PID"
      ACT_PID=""
      add_contender "$act_name" "$ACT_PORT" "" activator "n/a" "did not answer 200 on :$ACT_PORT (Host: $ACT_HOST) within ${STARTUP_TIMEOUT}s"
    fi
  fi
fi

log "starting nginx proxy on :$NGINX_PROXY_PORT"
start_nginx nginx-proxy "$SCRIPT_DIR/nginx-proxy.conf"
NGINX_PROXY_PID=$LAST_PID
wait_ready "$NGINX_PROXY_PORT" "$NGINX_PROXY_PID" || die "nginx proxy did not answer on :$NGINX_PROXY_PORT"
add_contender "nginx (upstream keepalive)" "$NGINX_PROXY_PORT" "$NGINX_PROXY_PID" nginx ok

log "starting HAProxy on :$HAPROXY_PORT"
haproxy -c -q -f "$SCRIPT_DIR/haproxy.cfg" || die "haproxy.cfg does not validate"
haproxy -db -f "$SCRIPT_DIR/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
STARTED_PIDS+=("$HAPROXY_PID")
wait_ready "$HAPROXY_PORT" "$HAPROXY_PID" || die "HAProxy did not answer on :$HAPROXY_PORT"
add_contender "HAProxy (http-reuse always)" "$HAPROXY_PORT" "$HAPROXY_PID" haproxy ok

N=${#C_NAME[@]}
IDX_DIRECT=0
IDX_HAPROXY=$((N - 1))

# Idle RSS, before any load.
C_RSS_IDLE=() C_RSS_AFTER=() C_HWM=()
for ((i = 0; i < N; i++)); do
  C_RSS_IDLE[i]=-; C_RSS_AFTER[i]=-; C_HWM[i]=-
  [[ -n "${C_PID[i]}" ]] && C_RSS_IDLE[i]=$(status_kb "${C_PID[i]}" VmRSS)
done

# ------------------------------------------------------------ wrk runs ---
# Parse wrk's output into W_RPS W_P50 W_P99 (ms) W_REQS W_NON2XX W_SOCKERR.
to_ms_awk='function ms(v) {
  if (v ~ /us$/) return v * 0.001;  if (v ~ /ms$/) return v + 0;
  if (v ~ /m$/) return v * 60000;   if (v ~ /h$/) return v * 3600000;
  if (v ~ /s$/) return v * 1000;    return v + 0 }'
parse_wrk() {
  local f=$1
  read -r W_RPS W_P50 W_P99 W_REQS W_NON2XX W_SOCKERR < <(awk "$to_ms_awk"'
    /^Requests\/sec:/            { rps = $2 }
    /^ +50%/                     { p50 = ms($2) }
    /^ +99%/                     { p99 = ms($2) }
    / requests in /              { reqs = $1 }
    /Non-2xx or 3xx responses:/  { non2xx = $NF }
    /Socket errors:/             { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %s %d %d\n", (rps == "" ? 0 : rps), (p50 == "" ? "-" : p50),
                 (p99 == "" ? "-" : p99), (reqs == "" ? 0 : reqs), non2xx, sockerr }' "$f")
}

# run_one MODE ROUND INDEX DURATION [CONNECTIONS [THREADS]]: one wrk run against contender INDEX, appended to $RAW.
run_one() {
  local mode=$1 round=$2 i=$3 dur=$4 conns=${5:-$CONNECTIONS} threads=${6:-$THREADS}
  local pid=${C_PID[$3]} url="http://127.0.0.1:${C_PORT[$3]}/"
  local pid2=${C_PID2[$3]} out="$TMP/wrk-$mode-$round-$i.txt" t0=0 t1=0 u0=0 u1=0 cpu=- cpu2=- args=()
  args=(-t"$threads" -c"$conns" -d"$dur" --latency)
  [[ -n "${C_HOST[i]}" ]] && args+=(-H "Host: ${C_HOST[i]}")
  [[ "$mode" == paced ]] && args+=(-s "$SCRIPT_DIR/paced.lua")
  [[ -n "$pid" ]] && t0=$(cpu_ticks "$pid")
  [[ -n "$pid2" ]] && u0=$(cpu_ticks "$pid2")
  if [[ "$mode" == paced ]]; then
    wrk "${args[@]}" "$url" -- "$PACED_DELAY_MS" >"$out" 2>&1 &
  else
    wrk "${args[@]}" "$url" >"$out" 2>&1 &
  fi
  WRK_PID=$!
  wait "$WRK_PID" || log "wrk exited with status $? for ${C_NAME[i]} (see output below)"
  WRK_PID=""
  [[ -n "$pid" ]] && t1=$(cpu_ticks "$pid")
  [[ -n "$pid2" ]] && u1=$(cpu_ticks "$pid2")
  parse_wrk "$out"
  if [[ -n "$pid" ]] && ((W_REQS > 0)); then
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$W_REQS" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  fi
  if [[ -n "$pid2" ]] && ((W_REQS > 0)); then
    cpu2=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$W_REQS" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  fi
  # Columns: mode round index req/s p50 p99 requests non-2xx socket-errors cpu cpu2
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$i" "$W_RPS" "$W_P50" "$W_P99" \
    "$W_REQS" "$W_NON2XX" "$W_SOCKERR" "$cpu" "$cpu2" >>"$RAW"
  log "$(printf '%-6s r%s %-28s %9s req/s  p50 %7s ms  p99 %7s ms  cpu %7s us/req%s  non-2xx %s  sock-err %s' \
    "$mode" "$round" "${C_NAME[i]}" "$W_RPS" "$W_P50" "$W_P99" "$cpu" "${pid2:+ (+ qp $cpu2)}" "$W_NON2XX" "$W_SOCKERR")"
  if ((W_REQS == 0)); then log "wrk output:"; cat "$out" >&2; fi
}

WRK_CMD="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
# Breaker overhead: at -c$BREAKER_CONNECTIONS (≤ cc=10) the cc=10 breaker admits every request at
# once, so cc=10 vs cc=0 isolates what the breaker and its stats cost, without the FIFO queueing
# that dominates the cc=10 row at -c$CONNECTIONS. One wrk thread (wrk needs threads ≤ connections).
BRK_THREADS=1
BRK_WRK_CMD="wrk -t$BRK_THREADS -c$BREAKER_CONNECTIONS -d$DURATION --latency"
if ((BREAKER)); then
  for b in "${!BRK_CC[@]}"; do
    i=${BRK_IDX[b]}
    if ((i < 0)); then
      log "breaker overhead: no QP_ROWS row with cc=${BRK_CC[b]} -> n/a"
    elif [[ "${C_STATUS[i]}" != ok ]]; then
      log "breaker overhead: ${C_NAME[i]} is not running -> n/a"
    fi
  done
  if ((BREAKER_CONNECTIONS > 10)); then
    log "breaker overhead: --breaker-connections $BREAKER_CONNECTIONS > 10, the cc=10 breaker will queue requests"
  fi
fi
if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
  log "warm-up: $WARMUP per contender (discarded)"
  for ((i = 0; i < N; i++)); do
    [[ "${C_STATUS[i]}" == ok ]] && run_one warmup 0 "$i" "$WARMUP"
  done
fi

for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r/$ROUNDS: saturation ($WRK_CMD)"
  for ((i = 0; i < N; i++)); do
    [[ "${C_STATUS[i]}" == ok ]] && run_one sat "$r" "$i" "$DURATION"
  done
  if ((PACED)); then
    log "round $r/$ROUNDS: paced ($WRK_CMD -s paced.lua -- $PACED_DELAY_MS)"
    for ((i = 0; i < N; i++)); do
      [[ "${C_STATUS[i]}" == ok ]] && run_one paced "$r" "$i" "$DURATION"
    done
  fi
  if ((BREAKER)); then
    log "round $r/$ROUNDS: breaker overhead ($BRK_WRK_CMD)"
    for i in "${BRK_IDX[@]}"; do
      ((i >= 0)) && [[ "${C_STATUS[i]}" == ok ]] && run_one breaker "$r" "$i" "$DURATION" "$BREAKER_CONNECTIONS" "$BRK_THREADS"
    done
  fi
done

for ((i = 0; i < N; i++)); do
  if [[ -n "${C_PID[i]}" ]]; then
    C_RSS_AFTER[i]=$(status_kb "${C_PID[i]}" VmRSS)
    C_HWM[i]=$(status_kb "${C_PID[i]}" VmHWM)
  fi
done

# -------------------------------------------- idle connections memory ---
IDLE_LINE=""
if ((IDLE_CONNS > 0)); then
  idx=-1
  for ((i = 0; i < N; i++)); do
    if [[ "${C_KIND[i]}" == qp ]]; then idx=$i; break; fi
  done
  if ((idx < 0)); then
    IDLE_LINE="- queue-proxy with $IDLE_CONNS idle keep-alive connections: n/a (no queue-proxy row)"
  elif [[ "${C_STATUS[idx]}" != ok ]]; then
    IDLE_LINE="- ${C_NAME[idx]} with $IDLE_CONNS idle keep-alive connections: n/a (not running)"
  else
    log "idle connections: opening $IDLE_CONNS keep-alive connections to ${C_NAME[idx]} (bounded to ${IDLE_CONNS_TIMEOUT}s)"
    before_kb=$(status_kb "${C_PID[idx]}" VmRSS)
    # shellcheck disable=SC2046
    res=$(timeout $((IDLE_CONNS_TIMEOUT + 10)) python3 "$SCRIPT_DIR/idle_conns.py" "${C_PORT[idx]}" "$IDLE_CONNS" \
          "$IDLE_CONNS_TIMEOUT" $(tree_pids "${C_PID[idx]}") || true)
    log "idle connections: $res"
    if [[ "$res" =~ ok=([0-9]+)\ open=([0-9]+)\ rss_kb=([0-9]+) ]]; then
      ok_c=${BASH_REMATCH[1]} open_c=${BASH_REMATCH[2]} with_kb=${BASH_REMATCH[3]}
      IDLE_LINE=$(awk -v n="${C_NAME[idx]}" -v c="$IDLE_CONNS" -v ok="$ok_c" -v open="$open_c" \
        -v w="$with_kb" -v b="$before_kb" -v idle="${C_RSS_IDLE[idx]}" 'BEGIN {
          printf "- %s with %d idle keep-alive connections open (%d opened, %d answered 2xx): **RSS %.1f MB** ", n, c, open, ok, w / 1024
          printf "(%.1f MB just before, idle %.1f MB before any load; %+.1f kB per connection)", b / 1024, idle / 1024, (open > 0 ? (w - b) / open : 0) }')
    else
      IDLE_LINE="- ${C_NAME[idx]} with $IDLE_CONNS idle keep-alive connections: measurement failed ($res)"
    fi
  fi
fi

# ------------------------------------ activator: requests held at zero ---
# A revision with no endpoints: the activator must buffer every request. Open
# $HELD_REQUESTS connections with one request each, wait until its queued gauge shows all
# of them, read its RSS, close them.
HELD_LINE=""
commas() { awk -v n="$1" 'BEGIN { s = sprintf("%d", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]([,]|$)/, ",&", s); print s }'; }
if ((ACTIVATOR && HELD_REQUESTS > 0)); then
  held_n=$(commas "$HELD_REQUESTS")
  held_label="activator RSS holding $held_n requests at zero"
  if ((ACT_IDX < 0)) || [[ -z "$ACT_PID" ]] || [[ "${C_STATUS[ACT_IDX]}" != ok ]]; then
    HELD_LINE="- $held_label: n/a (activator not running)"
  elif ! act_put "/v1/revisions/$ACT_NS/$ACT_COLD_REV" '{"containerConcurrency": 1, "timeoutSeconds": 600}'; then
    HELD_LINE="- $held_label: n/a (admin PUT of $ACT_NS/$ACT_COLD_REV failed)"
  else
    log "held requests: $HELD_REQUESTS requests for $ACT_NS/$ACT_COLD_REV (no endpoints) to the activator (bounded to ${HELD_TIMEOUT}s)"
    held_before_kb=$(status_kb "$ACT_PID" VmRSS)
    # shellcheck disable=SC2046
    timeout -k 5 $((HELD_TIMEOUT + 10)) python3 "$SCRIPT_DIR/held_requests.py" "$ACT_PORT" "$HELD_REQUESTS" "$HELD_TIMEOUT" \
      "http://127.0.0.1:$ACT_METRICS_PORT/metrics" "$ACT_NS" "$ACT_COLD_REV" $(tree_pids "$ACT_PID") \
      >"$TMP/held.out" 2>"$TMP/held.log" &
    HELPER_PID=$!
    wait "$HELPER_PID" || log "held_requests.py exited with status $?: $(tail -n 3 "$TMP/held.log" 2>/dev/null)"
    HELPER_PID=""
    res=$(cat "$TMP/held.out" 2>/dev/null || true)
    log "held requests: ${res:-no output}"
    if [[ "$res" =~ open=([0-9]+)\ sent=([0-9]+)\ queued=(-?[0-9]+)\ answered=([0-9]+)\ rss_kb=([0-9]+)\ secs=([^ ]+) ]]; then
      h_open=${BASH_REMATCH[1]} h_queued=${BASH_REMATCH[3]} h_ans=${BASH_REMATCH[4]} h_kb=${BASH_REMATCH[5]} h_secs=${BASH_REMATCH[6]}
      if ((h_queued >= HELD_REQUESTS)); then
        HELD_LINE=$(awk -v l="$held_label" -v w="$h_kb" -v b="$held_before_kb" -v idle="${C_RSS_IDLE[ACT_IDX]}" \
          -v n="$HELD_REQUESTS" -v nc="$held_n" -v secs="$h_secs" 'BEGIN {
            printf "- %s: **%.1f MB** (target ≤ 40 MB); idle RSS %.1f MB before any load, %.1f MB just before; ", l, w / 1024, idle / 1024, b / 1024
            printf "%+.2f kB per held request; all %s queued after %s s", (w - b) / n, nc, secs }')
      else
        HELD_LINE=$(awk -v l="$held_label" -v w="$h_kb" -v q="$h_queued" -v o="$h_open" -v a="$h_ans" 'BEGIN {
          printf "- %s: not reached within the time limit (queued gauge %d, %d connections opened, %d answered or closed by the activator; RSS then %.1f MB)", l, q, o, a, w / 1024 }')
      fi
      ((h_ans > 0)) && HELD_LINE+=" — **$h_ans connection(s) were answered or closed by the activator**"
    else
      HELD_LINE="- $held_label: measurement failed (${res:-no output})"
    fi
    # The connections are closed: the activator drops the requests, and once the burst is over (a quiet
    # second after the first one) its loop hands the freed memory back (malloc_trim).
    sleep 1
    HELD_LINE+=$(awk -v k="$(status_kb "$ACT_PID" VmRSS)" 'BEGIN { printf "; %.1f MB 1 s after closing them", k / 1024 }')
    sleep 2
    HELD_LINE+=$(awk -v k="$(status_kb "$ACT_PID" VmRSS)" 'BEGIN { printf ", %.1f MB 3 s after", k / 1024 }')
  fi
fi

# ------------------------------------------------------------- report ---
# median MODE INDEX COLUMN (1-based column of $RAW) -> median or "-"
median() {
  awk -F'\t' -v m="$1" -v i="$2" -v c="$3" '$1 == m && $3 == i && $c != "-" { print $c }' "$RAW" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
total() {
  awk -F'\t' -v m="$1" -v i="$2" -v c="$3" '$1 == m && $3 == i { s += $c; n++ } END { print (n ? s : "-") }' "$RAW"
}
# median_sum MODE INDEX: median over runs of CPU + second-process CPU (columns 10 + 11) -> or "-"
median_sum() {
  awk -F'\t' -v m="$1" -v i="$2" '$1 == m && $3 == i && $10 != "-" && $11 != "-" && $11 != "" { print $10 + $11 }' "$RAW" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# fmt VALUE DECIMALS
fmt() { if [[ "$1" == - || -z "$1" ]]; then echo "—"; else awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; fi; }
ratio() {   # ratio A B DECIMALS
  if [[ "$1" == - || "$2" == - || -z "$1" || -z "$2" ]]; then echo "—"; return; fi
  awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN { if (b == 0) print "—"; else printf "%.*f", d, a / b }'
}
mb() { if [[ "$1" == - ]]; then echo "—"; else awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; fi; }

commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || true)
if [[ -z "$commit" ]]; then
  commit="uncommitted"
elif [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no -- . ':(exclude)benchmarks/RESULTS.md' 2>/dev/null || true)" ]]; then
  commit="$commit (+ uncommitted changes)"
fi
wrk_ver=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
nginx_ver=$( (nginx -v 2>&1 || true) | sed -n 's|.*nginx/||p')
haproxy_ver=$( (haproxy -v 2>&1 || true) | awk 'NR == 1 { print $3 }')
qp_desc=".build/release/queue-proxy"
[[ "$QP_BIN" != "$QP_BIN_DEFAULT" ]] && qp_desc="$QP_BIN (QP_BIN override)"

warm_desc="one discarded ${WARMUP} warm-up run each"
[[ "$WARMUP" == 0 || "$WARMUP" == 0s ]] && warm_desc="no warm-up"
REPORT="$TMP/report.md"
{
  echo "# queue-proxy benchmark results"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- commit: $commit"
  echo "- machine: nproc $(nproc), kernel $(uname -r), Debian $(cat /etc/debian_version 2>/dev/null || echo '?')"
  echo "- tools: wrk $wrk_ver, nginx $nginx_ver, HAProxy $haproxy_ver"
  echo "- backend: nginx, 1 worker, \`return 200 \"Hello World!\\n\";\` on 127.0.0.1:$BACKEND_PORT; all contenders proxy to it"
  echo "- queue-proxy binary: $qp_desc"
  echo "- load: \`$WRK_CMD\`, $ROUNDS round(s), contenders alternated within each round, $warm_desc; figures are medians over rounds, ratios are ratios of medians"
  if ((PACED)); then
    echo "- paced load: the same with \`-s benchmarks/paced.lua -- $PACED_DELAY_MS\` ($PACED_DELAY_MS ms pause per connection before each request, ≤ $((CONNECTIONS * 1000 / PACED_DELAY_MS)) req/s offered)"
  fi
  if ((ACTIVATOR)); then
    echo "- activator: \`${ACT_BIN#"$REPO_ROOT"/}\` on :$ACT_PORT, revision $ACT_NS/$ACT_REV (containerConcurrency 0) with one endpoint, the queue-proxy cc=0 instance above; wrk sends \`Host: $ACT_HOST\` (a route); for its row the activator's CPU and the queue-proxy's CPU are measured separately"
  fi
  if ((BREAKER)); then
    echo "- breaker-overhead load: \`$BRK_WRK_CMD\` against the queue-proxy cc=0 and cc=10 instances above, in the same rounds"
  fi
  echo "- CPU µs/req: utime+stime of the proxy's process tree (/proc/PID/stat) over the run ÷ requests completed; RSS: VmRSS (peak: VmHWM) summed over the process tree (nginx = master + worker)"
  echo
  echo "## Saturation"
  echo
  echo "| contender | req/s | ÷ direct | ÷ HAProxy | p50 ms | p99 ms | CPU µs/req | CPU ÷ HAProxy | idle RSS MB | RSS after MB | peak RSS MB | non-2xx | socket errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  d_rps=$(median sat "$IDX_DIRECT" 4)
  h_rps=$(median sat "$IDX_HAPROXY" 4)
  h_cpu=$(median sat "$IDX_HAPROXY" 10)
  for ((i = 0; i < N; i++)); do
    if [[ "${C_STATUS[i]}" != ok ]]; then
      echo "| ${C_NAME[i]} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
      continue
    fi
    rps=$(median sat "$i" 4) cpu=$(median sat "$i" 10)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${C_NAME[i]}" \
      "$(fmt "$rps" 0)" "$(ratio "$rps" "$d_rps" 2)" "$(ratio "$rps" "$h_rps" 2)" \
      "$(fmt "$(median sat "$i" 5)" 2)" "$(fmt "$(median sat "$i" 6)" 2)" \
      "$(fmt "$cpu" 1)" "$(ratio "$cpu" "$h_cpu" 2)" \
      "$(mb "${C_RSS_IDLE[i]}")" "$(mb "${C_RSS_AFTER[i]}")" "$(mb "${C_HWM[i]}")" \
      "$(total sat "$i" 8)" "$(total sat "$i" 9)"
  done
  echo "| Knative's Go queue-proxy, cc=0 — reference (not measured in this run) | | 0.16 | | | ~22 | ~200 | | 23–25 | | | | |"
  echo "| Knative's Go queue-proxy, cc=10 — reference (not measured in this run) | | 0.14 | | | ~42 | ~210 | | 23–25 | | | | |"
  echo "| bare Swift epoll proxy (floor) — reference (not measured in this run) | | | | | ~5 | ~21 | 0.63 | 7 | | | | |"
  echo
  echo "Targets (BENCHMARKING.md): CPU ÷ HAProxy ≤ 0.8 with every feature on and no non-2xx, p99 no worse than HAProxy's, idle RSS ≤ 5 MB."
  for ((i = 0; i < N; i++)); do
    if [[ -n "${C_NOTE[i]}" ]]; then echo "${C_NAME[i]}: n/a — ${C_NOTE[i]}."; fi
  done
  if ((ACT_IDX >= 0)) && [[ "${C_STATUS[ACT_IDX]}" == ok ]]; then
    echo "${C_NAME[ACT_IDX]}: CPU µs/req, CPU ÷ HAProxy and RSS are the activator's alone;" \
      "the queue-proxy behind it adds $(fmt "$(median sat "$ACT_IDX" 11)" 1) µs/req" \
      "(total $(fmt "$(median_sum sat "$ACT_IDX")" 1) µs/req, see *Activator in the path*)."
  fi
  if ((PACED)); then
    echo
    echo "## Paced (latency below saturation)"
    echo
    echo "| contender | req/s | p50 ms | p99 ms | p99 ÷ HAProxy | CPU µs/req | CPU ÷ HAProxy | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    hp_p99=$(median paced "$IDX_HAPROXY" 6)
    hp_cpu=$(median paced "$IDX_HAPROXY" 10)
    for ((i = 0; i < N; i++)); do
      if [[ "${C_STATUS[i]}" != ok ]]; then
        echo "| ${C_NAME[i]} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
      fi
      p99=$(median paced "$i" 6) cpu=$(median paced "$i" 10)
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${C_NAME[i]}" \
        "$(fmt "$(median paced "$i" 4)" 0)" "$(fmt "$(median paced "$i" 5)" 2)" "$(fmt "$p99" 2)" \
        "$(ratio "$p99" "$hp_p99" 2)" "$(fmt "$cpu" 1)" "$(ratio "$cpu" "$hp_cpu" 2)" \
        "$(total paced "$i" 8)" "$(total paced "$i" 9)"
    done
  fi
  if ((BREAKER)); then
    echo
    if ((BREAKER_CONNECTIONS <= 10)); then
      echo "## Breaker overhead (wrk -c$BREAKER_CONNECTIONS: the breaker admits every request at once)"
    else
      echo "## Breaker overhead (wrk -c$BREAKER_CONNECTIONS: more than cc=10, so the breaker queues — not a pure overhead figure)"
    fi
    echo
    echo "| contender | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    brk_cpu=()
    for b in "${!BRK_CC[@]}"; do
      i=${BRK_IDX[b]}
      brk_cpu[b]=-
      if ((i < 0)); then
        echo "| queue-proxy cc=${BRK_CC[b]} | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
      fi
      if [[ "${C_STATUS[i]}" != ok ]]; then
        echo "| ${C_NAME[i]} | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
      fi
      brk_cpu[b]=$(median breaker "$i" 10)
      printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${C_NAME[i]}" \
        "$(fmt "$(median breaker "$i" 4)" 0)" "$(fmt "$(median breaker "$i" 5)" 2)" \
        "$(fmt "$(median breaker "$i" 6)" 2)" "$(fmt "${brk_cpu[b]}" 1)" \
        "$(total breaker "$i" 8)" "$(total breaker "$i" 9)"
    done
    echo
    if [[ "${brk_cpu[0]}" != - && "${brk_cpu[1]}" != - ]] && awk -v c="${brk_cpu[0]}" 'BEGIN { exit !(c > 0) }'; then
      awk -v a="${brk_cpu[1]}" -v b="${brk_cpu[0]}" 'BEGIN { printf "breaker + stats cost: %+.1f %% CPU/request over cc=0\n", (a / b - 1) * 100 }'
    else
      echo "breaker + stats cost: n/a (needs both the cc=0 and the cc=10 rows with a CPU figure)"
    fi
  fi
  if ((ACTIVATOR)); then
    echo
    echo "## Activator in the path"
    echo
    echo "Saturation medians of the same runs as above (\`$WRK_CMD\`). CPU µs/req per process; total = activator + queue-proxy (median of the per-run sums)."
    echo
    echo "| path | req/s | ÷ direct | p50 ms | p99 ms | activator CPU µs/req | queue-proxy CPU µs/req | total CPU µs/req | non-2xx | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '| direct → app | %s | 1.00 | %s | %s | — | — | — | %s | %s |\n' "$(fmt "$d_rps" 0)" \
      "$(fmt "$(median sat "$IDX_DIRECT" 5)" 2)" "$(fmt "$(median sat "$IDX_DIRECT" 6)" 2)" \
      "$(total sat "$IDX_DIRECT" 8)" "$(total sat "$IDX_DIRECT" 9)"
    if ((ACT_QP_IDX >= 0)) && [[ "${C_STATUS[ACT_QP_IDX]}" == ok ]]; then
      rps=$(median sat "$ACT_QP_IDX" 4) cpu=$(median sat "$ACT_QP_IDX" 10)
      printf '| %s → app | %s | %s | %s | %s | — | %s | %s | %s | %s |\n' "${C_NAME[ACT_QP_IDX]}" \
        "$(fmt "$rps" 0)" "$(ratio "$rps" "$d_rps" 2)" \
        "$(fmt "$(median sat "$ACT_QP_IDX" 5)" 2)" "$(fmt "$(median sat "$ACT_QP_IDX" 6)" 2)" \
        "$(fmt "$cpu" 1)" "$(fmt "$cpu" 1)" "$(total sat "$ACT_QP_IDX" 8)" "$(total sat "$ACT_QP_IDX" 9)"
    else
      echo "| queue-proxy cc=0 → app | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
    fi
    if ((ACT_IDX >= 0)) && [[ "${C_STATUS[ACT_IDX]}" == ok ]]; then
      rps=$(median sat "$ACT_IDX" 4)
      printf '| activator → queue-proxy cc=0 → app | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$(fmt "$rps" 0)" "$(ratio "$rps" "$d_rps" 2)" \
        "$(fmt "$(median sat "$ACT_IDX" 5)" 2)" "$(fmt "$(median sat "$ACT_IDX" 6)" 2)" \
        "$(fmt "$(median sat "$ACT_IDX" 10)" 1)" "$(fmt "$(median sat "$ACT_IDX" 11)" 1)" \
        "$(fmt "$(median_sum sat "$ACT_IDX")" 1)" "$(total sat "$ACT_IDX" 8)" "$(total sat "$ACT_IDX" 9)"
    else
      echo "| activator → queue-proxy cc=0 → app | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
    fi
    if ((ACT_IDX >= 0)) && [[ -n "${C_NOTE[ACT_IDX]}" ]]; then
      echo
      echo "activator: n/a — ${C_NOTE[ACT_IDX]}."
    fi
    if [[ -n "$HELD_LINE" ]]; then
      echo
      echo "$HELD_LINE"
    fi
  fi
  if [[ -n "$IDLE_LINE" ]]; then
    echo
    echo "## Idle connections"
    echo
    echo "$IDLE_LINE"
  fi
  warm_err=$(awk -F'\t' '$1 == "warmup" { s += $8 + $9 } END { print s + 0 }' "$RAW")
  if ((warm_err > 0)); then
    echo
    echo "**Warning:** the discarded warm-up runs saw $warm_err non-2xx responses / socket errors."
  fi
  echo
  echo "## All runs"
  echo
  echo "| run | round | contender | req/s | p50 ms | p99 ms | requests | CPU µs/req | non-2xx | socket errors |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r m r i rps p50 p99 reqs non2xx sockerr cpu cpu2; do
    [[ "$m" == warmup ]] && continue
    cpu_s=$(fmt "$cpu" 1)
    [[ -n "$cpu2" && "$cpu2" != - ]] && cpu_s+=" + qp $(fmt "$cpu2" 1)"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$m" "$r" "${C_NAME[i]}" "$(fmt "$rps" 0)" \
      "$(fmt "$p50" 2)" "$(fmt "$p99" 2)" "$reqs" "$cpu_s" "$non2xx" "$sockerr"
  done <"$RAW"
} >"$REPORT"

mkdir -p "$(dirname "$OUT")"
# The sections other scripts write (coldstart.py's kn-local rows, h2.sh's HTTP/2 table) stay as they are.
python3 - "$OUT" "$REPORT" <<'PY'
import sys
out, report = sys.argv[1], open(sys.argv[2]).read()
try:
    old = open(out).read()
except FileNotFoundError:
    old = ""
kept = []
for head in ("## kn-local", "## HTTP/2 (h2load"):
    start = old.find(head)
    if start >= 0:
        end = old.find("\n## ", start + 1)
        kept.append(old[start:end + 1 if end >= 0 else len(old)].rstrip("\n") + "\n")
open(out, "w").write(report.rstrip("\n") + "\n" + "".join("\n" + k for k in kept))
PY
cat "$REPORT"
log "report written to $OUT"
