#!/usr/bin/env bash
# The main job: everything on a fresh machine, then the demo. Fetches the weights, builds the
# `lopa` binary and the browser package (pkg/), trains the demo's SST-2 adapter if none is cached
# (configs/sst2-demo.json, ~25 min on 2 cores), exports the browser's weight files, starts
# `lopa serve` (the frozen model only) with CORS for the page, serves www/, and prints the URL.
# Ctrl-C stops everything. Ports: LOPA_PORT (page, 8000), LOPA_API_PORT (server, 8080).
source "$(dirname "$0")/lib/common.sh"
need cargo python3 node
scripts/fetch-weights.sh >/dev/null
build_lopa
scripts/build-wasm.sh
web="$(scripts/lib/web-models.sh demo | tail -1)"
port="${LOPA_PORT:-8000}"
api="${LOPA_API_PORT:-8080}"
pids=()
stop() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -eq 0 ] || kill -INT "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "lopa: stopped" >&2
}
trap stop INT TERM EXIT
"$LOPA" serve --backend cpu --addr "127.0.0.1:$api" --cors-origin "http://127.0.0.1:$port" --cors-origin "http://localhost:$port" &
pids+=($!)
node scripts/lib/static-server.mjs --isolated "$port" /www/=www /pkg/=pkg /models/="$web" &
pids+=($!)
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$api/health" >/dev/null 2>&1 && break
  sleep 1
done
echo
echo "lopa demo: http://127.0.0.1:$port/www/?endpoint=http://127.0.0.1:$api   (Ctrl-C stops)"
wait
