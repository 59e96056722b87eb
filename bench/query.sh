#!/usr/bin/env bash
# Query and retrieval, Sen PACS beside Orthanc (Debian `orthanc` +
# `orthanc-dicomweb`, TCP_NODELAY=1), same data, same clients:
#   - 5,000 studies x 10 small instances (50,000 instances) + one 400-slice
#     512x512 CT series, loaded into both;
#   - C-FIND study level (pynetdicom, one association): PatientID, wildcard
#     name, date range — bench/cfind.py;
#   - QIDO-RS shapes, series metadata of the 400-slice CT, WADO-RS series
#     retrieve MB/s, STOW-RS of 200 more CT slices — bench/dicomweb.py
#     (Python requests), and the same with curl as the client
#     (bench/dicomweb-curl.sh, 200 other slices), so the client is not what
#     is measured.
#
#   bash bench/query.sh [STUDIES=5000] [REPEAT=50]
#
# Environment, to run only part of it while iterating:
#   BENCH_TARGETS="pacs orthanc"  servers to load and measure
#   BENCH_CLIENTS="cfind python curl"  clients to run against each
#   BENCH_RUNS=1                  measures repeated on the loaded servers
#                                 (each run stores its own new instances)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
STUDIES=${1:-5000}
REPEAT=${2:-50}
PY=${PACS_PYTHON:-.venv/bin/python}
TARGETS=${BENCH_TARGETS:-pacs orthanc}
CLIENTS=${BENCH_CLIENTS:-cfind python curl}
RUNS=${BENCH_RUNS:-1}
has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/pacs-query-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin/gen-sample-data" bench-index --studies "$STUDIES" --per-study 10 --out "$work/src" >/dev/null
"$bin/gen-sample-data" bench-ct --count $((400 + 400 * RUNS)) --out "$work/ct-all" >/dev/null
# The first 400 slices are the series loaded into both servers; each run
# then stores two sets of 200 new ones (Python client, curl).
all=("$work/ct-all"/*.dcm)
mkdir -p "$work/ct"
mv "${all[@]:0:400}" "$work/ct/"
i=400
for r in $(seq 1 "$RUNS"); do
  for d in stow stow-curl; do
    mkdir -p "$work/$d.$r"
    mv "${all[@]:i:200}" "$work/$d.$r/"
    i=$((i + 200))
  done
done
read -r CT_STUDY CT_SERIES < <("$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.StudyInstanceUID, d.SeriesInstanceUID)" "$work/ct/000001.dcm")

measure() { # NAME DIMSE_PORT AE HTTP_BASE
  for r in $(seq 1 "$RUNS"); do
    if has "$CLIENTS" cfind; then echo "$1 run $r C-FIND:  $("$PY" bench/cfind.py 127.0.0.1 "$2" "$3" "$REPEAT")"; fi
    if has "$CLIENTS" python; then
      echo "$1 run $r DICOMweb: $("$PY" bench/dicomweb.py "$4" "$CT_STUDY" "$CT_SERIES" "$work/stow.$r" "$REPEAT")"
    fi
    if has "$CLIENTS" curl; then
      echo "$1 run $r DICOMweb (curl): $(bash bench/dicomweb-curl.sh "$4" "$CT_STUDY" "$CT_SERIES" "$work/stow-curl.$r" "$REPEAT")"
    fi
  done
}

# Sen PACS: offline import, then serve with BENCH allowed to query.
if has "$TARGETS" pacs; then
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
TOML
"$bin/pacs" serve --config "$work/pacs.toml" >"$work/pacs.log" 2>&1 &
pids+=($!)
wait_echo PACS 31112
measure sen-pacs 31112 PACS http://127.0.0.1:31080/dicom-web
fi

# Orthanc: the same files by C-STORE over 4 associations.
has "$TARGETS" orthanc || exit 0
orthanc_dicomweb_start "$work" 32112 32080
storescu_load ORTHANC 32112 "$work/src" "$work/ct" "$work"
measure orthanc 32112 ORTHANC http://127.0.0.1:32080/dicom-web
