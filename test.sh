#!/usr/bin/env bash
# The test command: installs what the tests need if missing, builds, runs the whole suite and a short
# fuzz run of the HTTP/1 codec. Works on a fresh Debian 12 machine with the Swift toolchain, as root.
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)  # kn-local's pod network namespaces
command -v nghttp >/dev/null || need+=(nghttp2-client)  # nghttp/h2load: the HTTP/2 tests' client
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The gRPC tests' peer (Tests/grpc/echo.py) needs grpcio: a test-only virtualenv, made once.
venv=.build/test-venv
if ! "$venv/bin/python" -c 'import grpc' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check grpcio
fi
export KN_TEST_PYTHON="$PWD/$venv/bin/python"

swift build --build-tests
# The full log stays in .build/test-output.txt; the screen gets failures (cut short) and the verdict.
status=0
# In parallel (Swift Testing's default): tests wait for events (a gauge, the request at the fake app), not
# for guessed sleeps, so load makes them slower, never wrong. ~45 s on 2 cores (serial: ~80 s).
swift test --skip-build >.build/test-output.txt 2>&1 || status=$?
grep -E '✘' .build/test-output.txt | cut -c1-400 || true
grep -E 'Test run with|Executed [0-9]+ tests' .build/test-output.txt | cut -c1-400 || true
[ "$status" -eq 0 ] || { echo "swift test failed (exit $status); full log: .build/test-output.txt"; exit "$status"; }

Fuzz/run.sh "${FUZZ_SECONDS:-20}"
# The verdict last, where CI reads it (the fuzz output above would otherwise close the log).
grep -E 'Test run with [0-9]+ tests' .build/test-output.txt | tail -1 | cut -c1-200
