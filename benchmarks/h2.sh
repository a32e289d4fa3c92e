#!/usr/bin/env bash
# HTTP/2 benchmark: h2load (h2c, prior knowledge) through queue-proxy and activator → queue-proxy, against
# direct access and HAProxy, all in front of one nginx h2c backend, alternated in rounds, medians and ratios,
# CPU µs per stream from /proc (BENCHMARKING.md's method). Writes the "## HTTP/2" section of RESULTS.md.
#
#   sudo bash benchmarks/h2.sh [--rounds 3] [--duration 10] [--clients 10] [--streams 10] [--no-build] [--out FILE]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$SCRIPT_DIR/lib.sh"

ROUNDS=3
DURATION=10      # seconds per run (h2load -D)
CLIENTS=10       # connections (h2load -c)
STREAMS=10       # concurrent streams per connection (h2load -m)
BUILD=1
OUT="$REPO_ROOT/benchmarks/RESULTS.md"
QP_BIN="${QP_BIN:-$REPO_ROOT/.build/release/queue-proxy}"
ACT_BIN="${ACT_BIN:-$REPO_ROOT/.build/release/activator}"
BACKEND_PORT=8080 QP_PORT=8012 ACT_PORT=8014 HAPROXY_PORT=8082 ACT_ADMIN=127.0.0.1:8090

# SCRIPT and ORIG_ARGS are read by lib.sh's enter_private_netns (it re-executes this script).
# shellcheck disable=SC2034
ORIG_ARGS=("$@")
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "h2.sh: unknown option: $1" >&2; exit 2 ;;
  esac
done
[[ "$OUT" = /* ]] || OUT="$PWD/$OUT"
[[ "$(id -u)" == 0 ]] || die "must run as root (network namespace, package installation)"

if [[ "${BENCH_PHASE1_DONE:-}" != 1 ]]; then
  install_missing h2load:nghttp2-client nginx:nginx-light haproxy:haproxy curl:curl unshare:util-linux ip:iproute2
  ((BUILD)) && build_release
  export BENCH_PHASE1_DONE=1
fi
enter_private_netns

# ---------------------------------------------------------- inside the netns ---
cd "$REPO_ROOT"
ulimit -n 65536 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/h2-bench.XXXXXX)
chmod 755 "$TMP"
RAW="$TMP/raw.tsv"
: >"$RAW"
STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill_tree "$p"; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# h2c request with prior knowledge until it answers 200.
wait_h2() {
  local port=$1 i
  shift
  for ((i = 0; i < 100; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge --max-time 2 "$@" "http://127.0.0.1:$port/")" == 200 ]] && return 0
    sleep 0.1
  done
  die "nothing answers h2c on :$port"
}

mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
nginx -p "$TMP/nginx/" -e stderr -c "$SCRIPT_DIR/nginx-h2c-backend.conf" >"$TMP/nginx.log" 2>&1 &
STARTED+=($!)
wait_h2 "$BACKEND_PORT"

env QUEUE_SERVING_PORT=$QP_PORT USER_PORT=$BACKEND_PORT CONTAINER_CONCURRENCY=0 QUEUE_SERVING_TLS_PORT=8112 \
    REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL= SERVING_NAMESPACE=default \
    SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 SERVING_POD=hello-pod SERVING_POD_IP=127.0.0.1 \
    "$QP_BIN" >"$TMP/qp.log" 2>&1 &
QP_PID=$!
STARTED+=("$QP_PID")
wait_h2 "$QP_PORT"

"$ACT_BIN" --port $ACT_PORT --h2c-port 0 --metrics-port 0 --admin-address $ACT_ADMIN >"$TMP/act.log" 2>&1 &
ACT_PID=$!
STARTED+=("$ACT_PID")
for ((i = 0; i < 50; i++)); do curl -s -o /dev/null "http://$ACT_ADMIN/v1/state" && break; sleep 0.1; done
curl -sf -X PUT "http://$ACT_ADMIN/v1/revisions/default/hello-00001" -d '{"containerConcurrency": 0}' >/dev/null
curl -sf -X PUT "http://$ACT_ADMIN/v1/revisions/default/hello-00001/endpoints" \
  -d "{\"addresses\": [\"127.0.0.1:$QP_PORT\"]}" >/dev/null
ROUTE=(-H "knative-serving-namespace: default" -H "knative-serving-revision: hello-00001")
wait_h2 "$ACT_PORT" "${ROUTE[@]}"

haproxy -db -f "$SCRIPT_DIR/haproxy-h2c.cfg" >"$TMP/haproxy.log" 2>&1 &
HA_PID=$!
STARTED+=("$HA_PID")
wait_h2 "$HAPROXY_PORT"

NAMES=("direct" "queue-proxy cc=0" "activator → queue-proxy cc=0" "HAProxy 2.6 (h2c both sides)")
PORTS=("$BACKEND_PORT" "$QP_PORT" "$ACT_PORT" "$HAPROXY_PORT")
PIDS=("" "$QP_PID" "$ACT_PID" "$HA_PID")
RSS_IDLE=("-" "$(status_kb "$QP_PID" VmRSS)" "$(status_kb "$ACT_PID" VmRSS)" "$(status_kb "$HA_PID" VmRSS)")

# run ROUND INDEX: one h2load run; appends "round index req/s mean-ms succeeded non2xx cpu cpu-qp" to $RAW.
run() {
  local r=$1 i=$2 log="$TMP/h2load-$1-$2.txt" t0=0 t1=0 q0=0 q1=0 args=()
  [[ $i == 2 ]] && args=("${ROUTE[@]}")
  [[ -n "${PIDS[i]}" ]] && t0=$(cpu_ticks "${PIDS[i]}")
  q0=$(cpu_ticks "$QP_PID")
  h2load -c "$CLIENTS" -m "$STREAMS" -D "$DURATION" --warm-up-time=1 "${args[@]}" "http://127.0.0.1:${PORTS[i]}/" >"$log" 2>&1 || true
  [[ -n "${PIDS[i]}" ]] && t1=$(cpu_ticks "${PIDS[i]}")
  q1=$(cpu_ticks "$QP_PID")
  read -r rps mean ok non2xx < <(awk '
    /^finished in/ { gsub(/,/, ""); rps = $4 }
    /^requests:/ { ok = $8 }
    /^status codes:/ { non2xx = $5 + $7 + $9 }
    /^time for request:/ { v = $6; if (v ~ /us$/) m = v * 0.001; else if (v ~ /ms$/) m = v + 0; else m = v * 1000 }
    END { printf "%s %s %d %d\n", rps + 0, m + 0, ok, non2xx }' "$log")
  local cpu=- cpuq=-
  if ((ok > 0)); then
    [[ -n "${PIDS[i]}" ]] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$ok" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    [[ $i == 2 ]] && cpuq=$(awk -v d=$((q1 - q0)) -v hz="$CLK_TCK" -v n="$ok" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$i" "$rps" "$mean" "$ok" "$non2xx" "$cpu" "$cpuq" >>"$RAW"
  log "$(printf 'r%s %-32s %9s req/s  mean %6s ms  cpu %6s us/stream%s  non-2xx %s' "$r" "${NAMES[i]}" "$rps" "$mean" "$cpu" \
    "$([[ $cpuq != - ]] && echo " (+ qp $cpuq)")" "$non2xx")"
}

for ((r = 1; r <= ROUNDS; r++)); do
  for i in "${!NAMES[@]}"; do run "$r" "$i"; done
done

median() {  # median INDEX COLUMN (1-based column of $RAW)
  awk -F'\t' -v i="$1" -v c="$2" '$2 == i && $c != "-" { print $c }' "$RAW" | sort -g |
    awk '{ v[n++] = $1 } END { if (!n) print "-"; else print (n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "—"; else printf "%.2f", a / b }'; }
D_RPS=$(median 0 3) H_RPS=$(median 3 3) H_CPU=$(median 3 7)

REPORT="$TMP/section.md"
{
  echo "## HTTP/2 (h2load, benchmarks/h2.sh)"
  echo
  # The \\n is meant literally (it is nginx's config text in the report).
  # shellcheck disable=SC2028
  echo "$(date -u +%Y-%m-%d), commit $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, kernel $(uname -r)." \
    "\`h2load -c$CLIENTS -m$STREAMS -D$DURATION\` (h2c prior knowledge), $ROUNDS rounds alternated, medians." \
    "Backend: nginx, one worker, h2c, \`return 200 \"Hello World!\\n\"\`. Every proxy speaks h2c to it."
  echo
  echo "| contender | req/s | ÷ direct | ÷ HAProxy | mean ms | CPU µs/stream | CPU ÷ HAProxy | idle RSS MB | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for i in "${!NAMES[@]}"; do
    rps=$(median "$i" 3) cpu=$(median "$i" 7)
    cpu_text=$cpu
    [[ $i == 2 ]] && cpu_text="$cpu (+ qp $(median "$i" 8))"
    rss=${RSS_IDLE[i]}
    [[ $rss != - ]] && rss=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "${NAMES[i]}" "$rps" "$(ratio "$rps" "$D_RPS")" \
      "$(ratio "$rps" "$H_RPS")" "$(median "$i" 4)" "$cpu_text" "$(ratio "$cpu" "$H_CPU")" "$rss" \
      "$(awk -F'\t' -v i="$i" '$2 == i { s += $6 } END { print s + 0 }' "$RAW")"
  done
  echo
  echo "All runs (round, contender, req/s, mean ms, streams, non-2xx, CPU µs/stream, + queue-proxy's):"
  echo
  echo '```'
  while IFS=$'\t' read -r r i rps mean ok non2xx cpu cpuq; do
    printf '%s  %-32s %9s  %6s  %8s  %s  %s  %s\n' "$r" "${NAMES[i]}" "$rps" "$mean" "$ok" "$non2xx" "$cpu" "$cpuq"
  done <"$RAW"
  echo '```'
} >"$REPORT"

# Replace the section in $OUT (or append it), leaving the other sections alone.
python3 - "$OUT" "$REPORT" <<'PY'
import sys
out, section = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(out).read()
except FileNotFoundError:
    text = ""
head = "## HTTP/2 (h2load"
start = text.find(head)
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
else:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
open(out, "w").write(text)
PY
cat "$REPORT"
log "section written to $OUT"
