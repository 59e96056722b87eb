#!/usr/bin/env bash
# WADO-RS series retrieve converted on request, Sen PACS beside Orthanc
# (Debian `orthanc` + `orthanc-dicomweb`, which converts with DCMTK's
# codecs): the same N-slice 512x512 16-bit CT series (Explicit VR LE) in
# both, fetched by curl with `transfer-syntax=` JPEG Lossless SV1 and RLE
# Lossless, and as stored for reference. Reports, per server and syntax,
# the median over RUNS of instances/s and the bytes on the wire.
#
#   bash bench/transcode.sh [SLICES=200] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SLICES=${1:-200}
RUNS=${2:-3}
PY=${PACS_PYTHON:-.venv/bin/python}
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/pacs-transcode-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin/gen-sample-data" bench-ct --count "$SLICES" --out "$work/ct" >/dev/null
mkdir -p "$work/empty"
read -r STUDY SERIES < <("$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.StudyInstanceUID, d.SeriesInstanceUID)" "$work/ct/000001.dcm")

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

measure() { # NAME BASE
  local url="$2/studies/$STUDY/series/$SERIES" ts label rate wire
  for ts in '*' 1.2.840.10008.1.2.4.70 1.2.840.10008.1.2.5; do
    label=$ts
    [ "$ts" = '*' ] && label="as stored"
    # One warm-up, then RUNS timed fetches.
    curl -sf -o /dev/null -H "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=$ts" "$url" || {
      echo "$1 $label: refused"
      continue
    }
    read -r rate wire < <(for _ in $(seq 1 "$RUNS"); do
      curl -sf -o /dev/null -H "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=$ts" \
        -w '%{size_download} %{time_total}\n' "$url"
    done | awk -v n="$SLICES" '{ print n / $2, $1 / 1e6 }' | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }')
    printf '%s %s: %.1f instances/s, %.1f MB on the wire\n' "$1" "$label" "$rate" "$wire"
  done
}

"$bin/pacs" --data-dir "$work/pacs" import "$work/ct" >/dev/null 2>&1
cat >"$work/pacs.toml" <<TOML
ae_title = "PACS"
dimse_listen = "127.0.0.1:33112"
http_listen = "127.0.0.1:33080"
data_dir = "$work/pacs"
TOML
"$bin/pacs" serve --config "$work/pacs.toml" >"$work/pacs.log" 2>&1 &
pids+=($!)
wait_echo PACS 33112
measure sen-pacs http://127.0.0.1:33080/dicom-web

orthanc_dicomweb_start "$work" 34112 34080
storescu_load ORTHANC 34112 "$work/empty" "$work/ct" "$work"
measure orthanc http://127.0.0.1:34080/dicom-web
