# shellcheck shell=bash
# Helpers shared by the benchmark scripts (run.sh, h2.sh): logging, package installation, the release
# build, the private network namespace, and per-process-tree CPU and memory figures from /proc
# (BENCHMARKING.md's method; h2.sh uses them, run.sh's driver bench.py has its own). Sourced, not run.
# The caller sets SCRIPT (its own path) and ORIG_ARGS (its arguments) before `enter_private_netns`.

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# install_missing COMMAND:PACKAGE ...: apt-get installs the packages whose command is missing.
install_missing() {
  local pair missing=()
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

# The static release build the benchmarks measure (REPO_ROOT set by the caller).
build_release() {
  log "building: swift build -c release -Xswiftc -static-executable (in $REPO_ROOT)"
  (cd "$REPO_ROOT" && swift build -c release -Xswiftc -static-executable)
}

in_private_netns() {
  [[ "${BENCH_IN_NETNS:-}" == 1 ]] && return 0
  # Already isolated by the caller (e.g. `unshare -n ...`): no interface but lo.
  ! awk -F: 'NR > 2 { gsub(/ /, "", $1); if ($1 != "lo") found = 1 } END { exit !found }' /proc/net/dev
}

# Re-executes the calling script inside a private network namespace (loopback only) unless already there.
enter_private_netns() {
  in_private_netns && return 0
  log "re-executing inside a private network namespace (loopback only)"
  # A private PID namespace as well, when the kernel allows it: then no process
  # we start can outlive the script even if it is killed with SIGKILL.
  # --kill-child: if unshare itself is killed, the script gets SIGTERM and cleans up.
  # The single quotes are meant: $0 and $@ expand in the inner sh, as the script and its arguments.
  # shellcheck disable=SC2016
  if unshare -n -p -f --mount-proc --kill-child=SIGTERM true 2>/dev/null; then
    exec unshare -n -p -f --mount-proc --kill-child=SIGTERM sh -c 'ip link set lo up; exec env BENCH_IN_NETNS=1 bash "$0" "$@"' "$SCRIPT" "${ORIG_ARGS[@]}"
  fi
  # shellcheck disable=SC2016
  exec unshare -n sh -c 'ip link set lo up; exec env BENCH_IN_NETNS=1 bash "$0" "$@"' "$SCRIPT" "${ORIG_ARGS[@]}"
}

# All PIDs of the tree rooted at $1 (the process and its descendants).
tree_pids() {
  local root=$1 f line rest pid ppid
  local -A children=()
  for f in /proc/[0-9]*/stat; do
    { line=$(<"$f"); } 2>/dev/null || continue
    pid=${line%% *}
    rest=${line##*) }
    read -r _ ppid _ <<<"$rest"
    children[$ppid]+=" $pid"
  done
  local queue=("$root") out=() p
  while ((${#queue[@]})); do
    p=${queue[0]}; queue=("${queue[@]:1}")
    [[ -e /proc/$p ]] || continue
    out+=("$p")
    # shellcheck disable=SC2206
    [[ -n "${children[$p]:-}" ]] && queue+=(${children[$p]})
  done
  echo "${out[*]:-}"
}

# utime+stime (clock ticks) summed over the process tree (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
  local total=0 p line rest f
  for p in $(tree_pids "$1"); do
    { line=$(<"/proc/$p/stat"); } 2>/dev/null || continue
    rest=${line##*) }
    read -r -a f <<<"$rest"          # f[0] is field 3 (state), so field N is f[N-3]
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# Sum of a /proc/PID/status field (VmRSS, VmHWM) over the process tree, in kB.
status_kb() {
  local field=$2 total=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk -v k="$field:" '$1 == k { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# One-letter state of a process ("" if gone), e.g. R, S, Z.
proc_state() {
  local line
  { line=$(<"/proc/$1/stat"); } 2>/dev/null || return 0
  line=${line##*) }
  echo "${line%% *}"
}

kill_tree() {
  local pids p i alive st
  pids=$(tree_pids "$1")
  [[ -n "$pids" ]] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive=0
    for p in $pids; do
      st=$(proc_state "$p")
      if [[ -n "$st" && "$st" != Z ]]; then alive=1; fi
    done
    ((alive)) || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
