# Helpers shared by the bench scripts; `source bench/lib.sh` from the repo root.

# Waits (up to 30 s) until AET on 127.0.0.1:PORT answers C-ECHO.
wait_echo() { # AET PORT
  for _ in $(seq 1 300); do
    /usr/bin/echoscu -aec "$1" 127.0.0.1 "$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server $1 on $2 did not answer C-ECHO" >&2
  return 1
}

# Loads a server by DCMTK storescu: the files of SRC over four
# associations and the directory CT over a fifth, all at once.
storescu_load() { # AET PORT SRC CT WORK
  local aet=$1 port=$2 src=$3 ct=$4 work=$5 p s
  ls "$src" | split -n r/4 - "$work/part."
  local senders=()
  for p in "$work"/part.*; do
    (cd "$src" && TCP_NODELAY=1 /usr/bin/storescu -aec "$aet" +sd 127.0.0.1 "$port" $(cat "$p") >/dev/null 2>&1) &
    senders+=($!)
  done
  (TCP_NODELAY=1 /usr/bin/storescu -aec "$aet" +sd 127.0.0.1 "$port" "$ct" >/dev/null 2>&1) &
  senders+=($!)
  for s in "${senders[@]}"; do wait "$s" || true; done
}

# Starts Orthanc with its DICOMweb plugin (Debian `orthanc` +
# `orthanc-dicomweb`), storage in WORK/orthanc, no storage compression and
# no result limits, TCP_NODELAY=1; appends its PID to the caller's `pids`
# and waits until it answers C-ECHO.
orthanc_dicomweb_start() { # WORK DICOM_PORT HTTP_PORT
  local work=$1 dport=$2 hport=$3
  mkdir -p "$work/orthanc"
  cat >"$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $dport, "HttpPort": $hport, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true,
  "StorageCompression": false, "LimitFindResults": 0, "LimitFindInstances": 0,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
  TCP_NODELAY=1 /usr/sbin/Orthanc "$work/orthanc.json" >"$work/orthanc.log" 2>&1 &
  pids+=($!)
  wait_echo ORTHANC "$dport"
}
