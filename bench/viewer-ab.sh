#!/usr/bin/env bash
# Two builds of the viewer side by side (issue 15's cold start): one generated
# 400-slice CT imported once and copied, one server per build, then single
# cold runs of bench/viewer-cold.mjs alternating A, B, A, B… so that both
# see the same machine load. Prints one JSON line per run, prefixed A or B,
# then the medians.
#   bash bench/viewer-ab.sh PACS_A PACS_B [pairs] [local|slow]
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: bench/viewer-ab.sh PACS_A PACS_B [pairs] [local|slow]}
b=${2:?usage: bench/viewer-ab.sh PACS_A PACS_B [pairs] [local|slow]}
pairs=${3:-8}
link=${4:-local}
gen=${GEN_BIN:-target/release/gen-sample-data}
[ -x "$gen" ] || cargo build --release -p sample-data --bin gen-sample-data
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
"$gen" bench-ct --count 400 --out "$work/ct" >/dev/null
"$a" --data-dir "$work/a" import "$work/ct" >/dev/null
cp -a "$work/a" "$work/b"
port=$((20000 + RANDOM % 20000))
"$a" --data-dir "$work/a" serve --http-listen "127.0.0.1:$port" --dimse-listen "127.0.0.1:$((port + 1))" >"$work/a.log" 2>&1 &
pids+=($!)
"$b" --data-dir "$work/b" serve --http-listen "127.0.0.1:$((port + 2))" --dimse-listen "127.0.0.1:$((port + 3))" >"$work/b.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && curl -sf "http://127.0.0.1:$((port + 2))/healthz" >/dev/null && break
  sleep 0.1
done
study=$(curl -sf "http://127.0.0.1:$port/dicom-web/studies?AccessionNumber=ACC-BENCH-0001&includefield=0020000D" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["0020000D"]["Value"][0])')
for _ in $(seq 1 "$pairs"); do
  for v in A B; do
    p=$([ "$v" = A ] && echo "$port" || echo $((port + 2)))
    echo "$v $(node bench/viewer-cold.mjs --base "http://127.0.0.1:$p" --study "$study" --runs 1 --link "$link" | tail -1)"
  done
done | tee "$work/runs.txt"
python3 - "$work/runs.txt" <<'PY'
import json, statistics, sys
runs = {'A': [], 'B': []}
for line in open(sys.argv[1]):
    v, j = line.split(' ', 1)
    runs[v].append(json.loads(j))
for v, rs in runs.items():
    keys = [k for k in rs[0] if k.startswith('median_') and isinstance(rs[0][k], (int, float))]
    print(json.dumps({'build': v, 'pairs': len(rs), **{k: statistics.median(r[k] for r in rs if r.get(k) is not None) for k in keys}}))
PY
