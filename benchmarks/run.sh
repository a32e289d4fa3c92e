#!/usr/bin/env bash
# Side-by-side HTTP/1 benchmark of queue-proxy against direct access, the floor (a bare C epoll relay),
# nginx and HAProxy, plus the activator in front of queue-proxy (BENCHMARKING.md's method). The driver is
# bench.py; this script only prepares (packages, release build) and enters a private network namespace.
#
#   sudo bash benchmarks/run.sh [--rounds 3] [--duration 10s] [--no-build] [--out FILE]
#
# Run `bash benchmarks/run.sh --help` for all options.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# SCRIPT and ORIG_ARGS are read by lib.sh's enter_private_netns (it re-executes this script).
# shellcheck disable=SC2034
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
# shellcheck disable=SC2034
ORIG_ARGS=("$@")
# shellcheck source=lib.sh disable=SC1091
source "$SCRIPT_DIR/lib.sh"

command -v python3 >/dev/null || install_missing python3:python3
PYTHON=/usr/bin/python3
[[ -x "$PYTHON" ]] || PYTHON=$(command -v python3)
DRIVER=("$PYTHON" "$SCRIPT_DIR/bench.py")

for arg in "$@"; do
  case $arg in -h|--help) exec "${DRIVER[@]}" --help ;; esac
done
[[ "$(id -u)" == 0 ]] || die "must run as root (network namespace, package installation): sudo bash $0 $*"

# Outside the namespace (the network is there): install what is missing and build; the driver also
# checks the options, so a typo fails before anything starts.
if [[ "${BENCH_PHASE1_DONE:-}" != 1 ]]; then
  "${DRIVER[@]}" --prepare "$@"
  export BENCH_PHASE1_DONE=1
fi

enter_private_netns   # re-executes this script inside, loopback only (lib.sh)
ip link set lo up 2>/dev/null || true
exec "${DRIVER[@]}" "$@"
