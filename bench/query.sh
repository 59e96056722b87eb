#!/usr/bin/env bash
# Query and retrieval, Sen PACS beside Orthanc (Debian `orthanc` +
# `orthanc-dicomweb`, TCP_NODELAY=1), same data, same clients:
#   - 5,000 studies x 10 small instances (50,000 instances) + one 400-slice
#     512x512 CT series, loaded into both;
#   - C-FIND study level (pynetdicom, one association): PatientID, wildcard
#     name, date range — bench/cfind.py;
#   - QIDO-RS shapes, series metadata of the 400-slice CT, WADO-RS series
#     retrieve MB/s, STOW-RS of 200 more CT slices — bench/dicomweb.py.
#
#   bash bench/query.sh [STUDIES=5000] [REPEAT=50]
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-5000}
REPEAT=${2:-50}
PY=${PACS_PYTHON:-.venv/bin/python}
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/pacs-query-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin/gen-sample-data" bench-index --studies "$STUDIES" --per-study 10 --out "$work/src" >/dev/null
"$bin/gen-sample-data" bench-ct --count 600 --out "$work/ct-all" >/dev/null
mkdir -p "$work/ct" "$work/stow"
ls "$work/ct-all" | head -400 | while read -r f; do mv "$work/ct-all/$f" "$work/ct/"; done
mv "$work/ct-all"/*.dcm "$work/stow/"
read -r CT_STUDY CT_SERIES < <("$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.StudyInstanceUID, d.SeriesInstanceUID)" "$work/ct/000001.dcm")
wait_echo() { for _ in $(seq 1 300); do /usr/bin/echoscu -aec "$1" 127.0.0.1 "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# Sen PACS: offline import, then serve with BENCH allowed to query.
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
echo "sen-pacs C-FIND:  $("$PY" bench/cfind.py 127.0.0.1 31112 PACS "$REPEAT")"
echo "sen-pacs DICOMweb: $("$PY" bench/dicomweb.py http://127.0.0.1:31080/dicom-web "$CT_STUDY" "$CT_SERIES" "$work/stow" "$REPEAT")"

# Orthanc: the same files by C-STORE over 4 associations.
mkdir -p "$work/orthanc"
cat >"$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": 32112, "HttpPort": 32080, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true,
  "StorageCompression": false, "LimitFindResults": 0, "LimitFindInstances": 0,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
TCP_NODELAY=1 /usr/sbin/Orthanc "$work/orthanc.json" >"$work/orthanc.log" 2>&1 &
pids+=($!)
wait_echo ORTHANC 32112
ls "$work/src" | split -n r/4 - "$work/part."
senders=()
for p in "$work"/part.*; do
  (cd "$work/src" && TCP_NODELAY=1 /usr/bin/storescu -aec ORTHANC +sd 127.0.0.1 32112 $(cat "$p") >/dev/null 2>&1) &
  senders+=($!)
done
(TCP_NODELAY=1 /usr/bin/storescu -aec ORTHANC +sd 127.0.0.1 32112 "$work/ct" >/dev/null 2>&1) &
senders+=($!)
for s in "${senders[@]}"; do wait "$s" || true; done
echo "orthanc C-FIND:   $("$PY" bench/cfind.py 127.0.0.1 32112 ORTHANC "$REPEAT")"
echo "orthanc DICOMweb: $("$PY" bench/dicomweb.py http://127.0.0.1:32080/dicom-web "$CT_STUDY" "$CT_SERIES" "$work/stow" "$REPEAT")"
