#!/usr/bin/env bash
# Ingest benchmark: `pacs import` of N synthetic 512x512 CT slices (fsync on),
# beside `cp -r` of the same files followed by `sync` (the floor: same bytes
# written, made durable once at the end). Prints the median of RUNS runs.
#
#   bash bench/import.sh [N=2000] [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
RUNS=${2:-5}
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/pacs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin/gen-sample-data" bench-ct --count "$N" --out "$work/src" >/dev/null
bytes=$(du -sb "$work/src" | cut -f1)
echo "input: $N files, $bytes bytes"

now() { date +%s.%N; }
pacs_times=()
cp_times=()
for i in $(seq 1 "$RUNS"); do
  sync
  rm -rf "$work/data" "$work/copy"
  t0=$(now)
  "$bin/pacs" --data-dir "$work/data" import "$work/src" >/dev/null 2>&1
  t1=$(now)
  pacs_times+=("$(echo "$t1 - $t0" | bc -l)")
  sync
  t0=$(now)
  cp -r "$work/src" "$work/copy"
  sync
  t1=$(now)
  cp_times+=("$(echo "$t1 - $t0" | bc -l)")
  echo "run $i: pacs import ${pacs_times[-1]} s, cp+sync ${cp_times[-1]} s"
done
python3 - "$N" "$bytes" "${pacs_times[*]}" "${cp_times[*]}" <<'PY'
import statistics, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
p = [float(x) for x in sys.argv[3].split()]
c = [float(x) for x in sys.argv[4].split()]
mp, mc = statistics.median(p), statistics.median(c)
print(f"pacs import : median {mp:.3f} s  {n/mp:8.1f} instances/s  {size/mp/1e6:7.1f} MB/s")
print(f"cp + sync   : median {mc:.3f} s  {n/mc:8.1f} instances/s  {size/mc/1e6:7.1f} MB/s")
print(f"ratio pacs/cp+sync: {mc/mp:.2f}")
PY
