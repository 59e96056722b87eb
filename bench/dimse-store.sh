#!/usr/bin/env bash
# DIMSE ingest benchmark, side by side in one run: DCMTK storescu sending N
# synthetic 512x512 CT slices over 1 and over 4 associations into
#   - Sen PACS (`pacs serve`: each object and its index entry made durable
#     in the landing log with one fdatasync before the C-STORE-RSP; objects
#     moved to their blob keys in the background, or at shutdown),
#   - Orthanc (Debian package, TCP_NODELAY=1 in its environment),
#   - DCMTK storescp (writes files, no fsync).
# Each target gets a fresh data dir and a `sync` before every run; prints the
# median of RUNS runs and the ratios. The rate is the client's: from the
# first C-STORE to the last C-STORE-RSP. "stop s" is the time the server then
# takes to shut down cleanly (for Sen PACS: moving what is still landed).
#
#   bash bench/dimse-store.sh [N=1000] [RUNS=3]
#
# With S3FS=/path/to/s3s-fs (`cargo install s3s-fs@0.14.1 --features
# binary`), a fourth target: Sen PACS storing into an S3 bucket served by
# s3s-fs on 127.0.0.1 (disk-backed; each success waits for the PUT).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-1000}
RUNS=${2:-3}
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
for t in /usr/bin/storescu /usr/bin/storescp /usr/bin/echoscu /usr/sbin/Orthanc; do
  [ -x "$t" ] || { echo "missing $t: apt-get install dcmtk orthanc" >&2; exit 1; }
done
work=$(mktemp -d /tmp/pacs-dimse-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin/gen-sample-data" bench-ct --count "$N" --out "$work/src" >/dev/null
mkdir -p "$work/split"
i=0
for f in "$work"/src/*.dcm; do
  d="$work/split/$((i % 4))"; mkdir -p "$d"; ln -s "$f" "$d/"; i=$((i + 1))
done
port=21112

now() { date +%s.%N; }
start_server() { # name dir -> sets SERVER_PID, AET
  local name=$1 dir=$2
  port=$((port + 1))
  mkdir -p "$dir"
  case $name in
    pacs)
      AET=PACS
      PACS_STRICT_AE=false "$bin/pacs" --data-dir "$dir" serve --http-listen "127.0.0.1:$((port + 1000))" \
        --dimse-listen "127.0.0.1:$port" >"$dir.log" 2>&1 &
      ;;
    pacs-s3)
      AET=PACS
      mkdir -p "$dir/s3/bench"
      "$S3FS" --host 127.0.0.1 --port $((port + 2000)) --access-key bench --secret-key benchsecret \
        "$dir/s3" >"$dir.s3.log" 2>&1 &
      pids+=("$!")
      S3_PID=$!
      for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$((port + 2000))") 2>/dev/null && break
        sleep 0.1
      done
      PACS_STRICT_AE=false PACS_STORAGE_URL=s3://bench/pacs AWS_ACCESS_KEY_ID=bench \
        AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 \
        AWS_ENDPOINT_URL=http://127.0.0.1:$((port + 2000)) AWS_ALLOW_HTTP=true \
        "$bin/pacs" --data-dir "$dir/data" serve --http-listen "127.0.0.1:$((port + 1000))" \
        --dimse-listen "127.0.0.1:$port" >"$dir.log" 2>&1 &
      ;;
    orthanc)
      AET=ORTHANC
      cat >"$dir/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db",
  "DicomAet": "ORTHANC", "DicomPort": $port, "HttpPort": $((port + 1000)),
  "RemoteAccessAllowed": false, "DicomCheckCalledAet": false,
  "StorageCompression": false, "Plugins": [], "ConcurrentJobs": 2 }
JSON
      TCP_NODELAY=1 /usr/sbin/Orthanc "$dir/orthanc.json" >"$dir.log" 2>&1 &
      ;;
    storescp)
      AET=STORESCP
      TCP_NODELAY=1 /usr/bin/storescp --fork -aet STORESCP -od "$dir" "$port" >"$dir.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  wait_echo "$AET" "$port"
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  if [ -n "${S3_PID:-}" ]; then kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; S3_PID=; fi
}
targets="pacs orthanc storescp"
if [ -n "${S3FS:-}" ]; then targets="pacs pacs-s3 orthanc storescp"; fi

send() { # assocs
  if [ "$1" = 1 ]; then
    TCP_NODELAY=1 /usr/bin/storescu -aec "$AET" +sd 127.0.0.1 "$port" "$work/src" >/dev/null 2>&1
  else
    local ps=()
    for d in 0 1 2 3; do
      TCP_NODELAY=1 /usr/bin/storescu -aec "$AET" +sd 127.0.0.1 "$port" "$work/split/$d" >/dev/null 2>&1 &
      ps+=($!)
    done
    for p in "${ps[@]}"; do wait "$p"; done
  fi
}

results="$work/results.txt"
: >"$results"
for run in $(seq 1 "$RUNS"); do
  for target in $targets; do
    for assocs in 1 4; do
      dir="$work/data-$target-$run-$assocs"
      sync
      start_server "$target" "$dir"
      t0=$(now)
      send "$assocs"
      t1=$(now)
      stop_server
      t2=$(now)
      stored=$(find "$dir" -type f -size +100k -not -path '*/landing/*' | wc -l)
      secs=$(echo "$t1 - $t0" | bc -l)
      stop=$(echo "$t2 - $t1" | bc -l)
      echo "$target $assocs $secs $stored $stop" | tee -a "$results"
      rm -rf "$dir"
    done
  done
done
python3 - "$N" "$results" $targets <<'PY'
import statistics, sys
n = int(sys.argv[1])
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
med, stop = {}, {}
for target in sys.argv[3:]:
    for a in ("1", "4"):
        xs = [float(r[2]) for r in rows if r[0] == target and r[1] == a]
        med[(target, a)] = statistics.median(xs)
        stop[(target, a)] = statistics.median(float(r[4]) for r in rows if r[0] == target and r[1] == a)
print(f"{'target':10} {'assocs':>6} {'median s':>9} {'inst/s':>8} {'stop s':>7}")
for (t, a), s in med.items():
    print(f"{t:10} {a:>6} {s:9.2f} {n/s:8.1f} {stop[(t, a)]:7.2f}")
for a in ("1", "4"):
    p = med[("pacs", a)]
    print(f"{a} assoc: pacs/orthanc {med[('orthanc', a)]/p:.2f}x  pacs/storescp {med[('storescp', a)]/p:.2f}x")
    if ("pacs-s3", a) in med:
        print(f"{a} assoc: pacs-s3/orthanc {med[('orthanc', a)]/med[('pacs-s3', a)]:.2f}x")
PY
