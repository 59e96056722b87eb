#!/usr/bin/env bash
# Viewer cold start and slow link (issue 15): a generated 400-slice CT in a
# fresh archive, `pacs serve` (release build unless PACS_BIN is set), then
# bench/viewer-cold.mjs on localhost and under Chromium's 2 Mbit/s / 150 ms
# emulation. Needs Node.js, /usr/bin/chromium and viewer-web/app/node_modules.
#   bash bench/viewer-cold.sh [runs]
# DETAIL=1 also prints, per run, where the time went (bench/viewer-cold.mjs --detail).
# With OHIF_DIST=<dir of @ohif/app's dist> (fetched and checked by
# `bash tests/ohif/run.sh`, under target/ohif-app-<version>/package/dist), stock
# OHIF is measured the same way on the same server, study and links: it is
# served by tests/ohif/check.mjs (SERVE_ONLY) with /dicom-web forwarded.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
pacs=${PACS_BIN:-target/release/pacs}
gen=${GEN_BIN:-$(dirname "$pacs")/gen-sample-data}
[ -x "$pacs" ] || cargo build --release -p pacs
[ -x "$gen" ] || cargo build --release -p sample-data --bin gen-sample-data
work=$(mktemp -d)
pid=
ohif_pid=
trap '[ -n "$ohif_pid" ] && kill "$ohif_pid" 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
"$gen" bench-ct --count 400 --out "$work/ct" >/dev/null
"$pacs" --data-dir "$work/data" import "$work/ct" >/dev/null
port=$((20000 + RANDOM % 20000))
"$pacs" --data-dir "$work/data" serve --http-listen "127.0.0.1:$port" --dimse-listen "127.0.0.1:$((port + 1))" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
study=$(curl -sf "http://127.0.0.1:$port/dicom-web/studies?AccessionNumber=ACC-BENCH-0001&includefield=0020000D" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["0020000D"]["Value"][0])')
node bench/viewer-cold.mjs --base "http://127.0.0.1:$port" --study "$study" --runs "$runs" --link local ${DETAIL:+--detail 1}
node bench/viewer-cold.mjs --base "http://127.0.0.1:$port" --study "$study" --runs "$runs" --link slow ${DETAIL:+--detail 1}
if [ -n "${OHIF_DIST:-}" ]; then
  (cd tests/ohif && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
  PACS_URL="http://127.0.0.1:$port" OHIF_DIST="$OHIF_DIST" OUT_DIR="$work/ohif" MANIFEST=sample-data/manifest.json \
    SERVE_ONLY=1 node tests/ohif/check.mjs >"$work/ohif.log" 2>&1 &
  ohif_pid=$!
  ohif=
  for _ in $(seq 1 100); do
    ohif=$(sed -n 's/^OHIF served at \(http:[^ ,]*\).*/\1/p' "$work/ohif.log")
    [ -n "$ohif" ] && break
    sleep 0.1
  done
  node bench/viewer-cold.mjs --viewer ohif --base "$ohif" --study "$study" --runs "$runs" --link local
  node bench/viewer-cold.mjs --viewer ohif --base "$ohif" --study "$study" --runs "$runs" --link slow
fi
