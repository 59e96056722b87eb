#!/bin/bash
# Modality Worklist C-FIND latency with N scheduled steps, Sen PACS beside
# Orthanc's worklist plugin on the same .wl files, then HL7 ORM^O01 over
# MLLP to ACK (messages per second).
#   bash bench/worklist.sh [N=10000] [REPEAT=30] [HL7_MESSAGES=2000]
# Needs: the release binary (cargo build --release), pynetdicom/pydicom
# (PACS_PYTHON), Debian `orthanc` for the comparison (skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; REPEAT=${2:-30}; HL7N=${3:-2000}
PY=${PACS_PYTHON:-python3}
PACS=${PACS_BIN:-target/release/pacs}
WORK=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
echo "making $N worklist files"; "$PY" bench/mwl.py make "$WORK/wl" "$N"
cat >"$WORK/pacs.toml" <<TOML
worklist_dir = "$WORK/wl"
hl7_listen = "127.0.0.1:22575"
[[remote_ae]]
ae_title = "BENCH"
host = "127.0.0.1"
port = 1
[[remote_ae]]
ae_title = "ECHOSCU"
host = "127.0.0.1"
port = 1
TOML
t0=$(date +%s.%N)
RUST_LOG=warn "$PACS" --data-dir "$WORK/data" serve --config "$WORK/pacs.toml" \
  --http-listen 127.0.0.1:28080 --dimse-listen 127.0.0.1:21112 2>"$WORK/pacs.log" & pids+=($!)
wait_echo PACS 21112
until [ "$(curl -s '127.0.0.1:28080/api/v1/orders?source=worklist_dir' | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$N" ]; do sleep 1; done
echo "sen: folder of $N files in the worklist after $(echo "$(date +%s.%N) - $t0" | bc) s"
echo "sen:     $("$PY" bench/mwl.py find 127.0.0.1 21112 PACS "$REPEAT")"
if [ -x /usr/sbin/Orthanc ] && [ -e /usr/share/orthanc/plugins/libModalityWorklists.so ]; then
  mkdir -p "$WORK/orthanc"
  cat >"$WORK/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": 24242, "HttpPort": 28042, "RemoteAccessAllowed": false,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true, "DicomAlwaysAllowFindWorklist": true,
  "Plugins": ["/usr/share/orthanc/plugins/libModalityWorklists.so"],
  "Worklists": { "Enable": true, "Database": "$WORK/wl" } }
JSON
  TCP_NODELAY=1 /usr/sbin/Orthanc "$WORK/orthanc.json" >"$WORK/orthanc.log" 2>&1 & pids+=($!)
  wait_echo ORTHANC 24242
  echo "orthanc: $("$PY" bench/mwl.py find 127.0.0.1 24242 ORTHANC "$REPEAT")"
fi
echo "hl7:     $("$PY" bench/mwl.py hl7 127.0.0.1 22575 "$HL7N")"
