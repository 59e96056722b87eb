#!/usr/bin/env bash
# Query/Retrieve beside Orthanc (Debian `orthanc`, TCP_NODELAY=1), same data,
# same clients for both servers:
#   - 5,000 studies x 10 small instances (50,000 instances) + one 400-slice
#     512x512 CT study, loaded into both (Sen PACS by `pacs import`, Orthanc
#     by storescu over four associations);
#   - C-FIND study level, p50/p99 of REPEAT queries per shape (PatientID,
#     wildcard name, date range) with a small Rust client on one
#     association (dimse-scp/examples/cfind_bench.rs: it does not decode
#     the identifiers it receives, so big result sets measure the server);
#   - C-MOVE of the 400-instance CT study to a DCMTK storescp (movescu,
#     Study Root), RUNS times, median.
#
#   bash bench/qr.sh [STUDIES=5000] [REPEAT=50] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
STUDIES=${1:-5000}
REPEAT=${2:-50}
RUNS=${3:-3}
cargo build --release -q -p pacs -p sample-data
cargo build --release -q -p dimse-scp --example cfind_bench
bin=${CARGO_TARGET_DIR:-target}/release
for t in /usr/bin/storescu /usr/bin/storescp /usr/bin/movescu /usr/bin/echoscu /usr/bin/dcmdump /usr/sbin/Orthanc; do
  [ -x "$t" ] || { echo "missing $t: apt-get install dcmtk orthanc" >&2; exit 1; }
done
work=$(mktemp -d /tmp/pacs-qr-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin/gen-sample-data" bench-index --studies "$STUDIES" --per-study 10 --out "$work/src" >/dev/null
"$bin/gen-sample-data" bench-ct --count 400 --out "$work/ct" >/dev/null
CT_STUDY=$(/usr/bin/dcmdump +P StudyInstanceUID "$work/ct/000001.dcm" | sed 's/.*\[\(.*\)\].*/\1/')

# The C-MOVE destination for both servers.
DEST_PORT=33104
mkdir -p "$work/dest"
TCP_NODELAY=1 /usr/bin/storescp -aet DEST -od "$work/dest" "$DEST_PORT" >"$work/dest.log" 2>&1 &
pids+=($!)
wait_echo DEST "$DEST_PORT"

now() { date +%s.%N; }
time_moves() { # called_ae port
  local xs=()
  for _ in $(seq 1 "$RUNS"); do
    rm -rf "$work/dest"/*
    sync
    local t0 t1
    t0=$(now)
    TCP_NODELAY=1 /usr/bin/movescu -S -aet BENCH -aec "$1" -aem DEST \
      -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$CT_STUDY" 127.0.0.1 "$2" >/dev/null 2>&1
    t1=$(now)
    local got
    got=$(find "$work/dest" -type f | wc -l)
    [ "$got" = 400 ] || { echo "C-MOVE from $1 delivered $got of 400" >&2; exit 1; }
    xs+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${xs[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.3f s", a[int((NR+1)/2)]}'
  echo " all: ${xs[*]}"
}

# Sen PACS: offline import, then serve with BENCH and DEST known.
"$bin/pacs" --data-dir "$work/pacs" import "$work/src" "$work/ct" >/dev/null 2>&1
cat >"$work/pacs.toml" <<TOML
ae_title = "PACS"
dimse_listen = "127.0.0.1:31112"
http_listen = "127.0.0.1:31080"
data_dir = "$work/pacs"
[[remote_ae]]
ae_title = "BENCH"
host = "127.0.0.1"
port = 31113
[[remote_ae]]
ae_title = "DEST"
host = "127.0.0.1"
port = $DEST_PORT
TOML
"$bin/pacs" serve --config "$work/pacs.toml" >"$work/pacs.log" 2>&1 &
pids+=($!)
wait_echo PACS 31112
echo "sen-pacs C-FIND: $("$bin/examples/cfind_bench" 127.0.0.1:31112 PACS "$REPEAT")"
echo "sen-pacs C-MOVE: $(time_moves PACS 31112)"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# Orthanc: the same files by C-STORE over 4 associations.
mkdir -p "$work/orthanc"
cat >"$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": 32112, "HttpPort": 32080, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true,
  "StorageCompression": false, "LimitFindResults": 0, "LimitFindInstances": 0, "Plugins": [],
  "DicomModalities": { "bench": ["BENCH", "127.0.0.1", 31113], "dest": ["DEST", "127.0.0.1", $DEST_PORT] } }
JSON
TCP_NODELAY=1 /usr/sbin/Orthanc "$work/orthanc.json" >"$work/orthanc.log" 2>&1 &
pids+=($!)
wait_echo ORTHANC 32112
storescu_load ORTHANC 32112 "$work/src" "$work/ct" "$work"
echo "orthanc C-FIND:  $("$bin/examples/cfind_bench" 127.0.0.1:32112 ORTHANC "$REPEAT")"
echo "orthanc C-MOVE:  $(time_moves ORTHANC 32112)"
