#!/usr/bin/env bash
# Builds the HTTP/1 codec fuzzer (libFuzzer + ASan) and runs it for a bounded time.
# Usage: Fuzz/run.sh [seconds]   (default 20). Crashes are saved under Fuzz/.out/ and fail the run;
# copy a crash into Fuzz/corpus/ once fixed, so it stays a regression input.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
mkdir -p .build/fuzz Fuzz/.out
swiftc -O -parse-as-library -sanitize=fuzzer,address -module-name FuzzHTTP1 -package-name knative_dataplane \
    Sources/ProxyCore/HTTP1/HTTPHead.swift Sources/ProxyCore/HTTP1/HTTP1Parser.swift \
    Sources/ProxyCore/HTTP1/ChunkedDecoder.swift Fuzz/FuzzHTTP1.swift \
    -o .build/fuzz/fuzz-http1 2> >(grep -v 'Cannot export local symbol' >&2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp Fuzz/corpus/* "$work"/
.build/fuzz/fuzz-http1 -max_total_time="$seconds" -max_len=8192 -artifact_prefix=Fuzz/.out/ "$work" 2>&1 | tail -n 3
