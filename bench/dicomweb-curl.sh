#!/usr/bin/env bash
# DICOMweb measures of one origin server with curl as the client (C, one
# keep-alive connection per measure, bodies to /dev/null), so that the
# client is not what is measured. Prints one JSON object.
#
#   bash bench/dicomweb-curl.sh BASE_URL CT_STUDY CT_SERIES STOW_DIR REPEAT
#
# BASE_URL is the DICOMweb root (e.g. http://127.0.0.1:8080/dicom-web).
# STOW_DIR holds instances not yet in the server; they are sent 10 per
# request, one request after the other.
set -euo pipefail
base=$1 study=$2 series=$3 stow_dir=$4 repeat=$5
tmp=$(mktemp -d /tmp/dicomweb-curl.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# p50 latency in ms of REPEAT GETs of one URL over one connection.
latency() {
  local url=$1 cfg=$tmp/latency.cfg i
  : >"$cfg"
  for i in $(seq 1 "$repeat"); do
    printf 'url = "%s"\noutput = "/dev/null"\nheader = "Accept: application/dicom+json"\nwrite-out = "%%{time_total}\\n"\n' "$url" >>"$cfg"
    [ "$i" = "$repeat" ] || printf 'next\n' >>"$cfg"
  done
  curl -sf -K "$cfg" | awk '{ print $1 * 1000 }' | median
}

qido_id=$(latency "$base/studies?PatientID=P001234")
qido_name=$(latency "$base/studies?PatientName=Nguy*&limit=100")
qido_date=$(latency "$base/studies?StudyDate=20240101-20240131&limit=100")
qido_all=$(latency "$base/studies?limit=100")

# WADO-RS series retrieve: bytes / time of the whole body, 5 times.
retrieve=$(for _ in 1 2 3 4 5; do
  curl -sf -o /dev/null -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' \
    -w '%{size_download} %{time_total}\n' "$base/studies/$study/series/$series"
done | awk '{ print $1 / $2 / 1e6 }' | median)

# STOW-RS: the bodies are built first, then sent one after the other on one
# connection; the rate counts instances over the whole send.
files=("$stow_dir"/*.dcm)
cfg=$tmp/stow.cfg
: >"$cfg"
n=0
for ((i = 0; i < ${#files[@]}; i += 10)); do
  b=$(printf 'b%032d' "$i")
  body=$tmp/body.$i
  for f in "${files[@]:i:10}"; do
    printf -- '--%s\r\nContent-Type: application/dicom\r\n\r\n' "$b"
    cat "$f"
    printf '\r\n'
    n=$((n + 1))
  done >"$body"
  printf -- '--%s--\r\n' "$b" >>"$body"
  [ "$i" = 0 ] || printf 'next\n' >>"$cfg"
  printf 'url = "%s/studies"\noutput = "/dev/null"\ndata-binary = "@%s"\nheader = "Content-Type: multipart/related; type=\\"application/dicom\\"; boundary=%s"\nheader = "Expect:"\nheader = "Accept: application/dicom+json"\nwrite-out = "%%{http_code}\\n"\n' \
    "$base" "$body" "$b" >>"$cfg"
done
t0=$(date +%s.%N)
codes=$(curl -s -K "$cfg" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
t1=$(date +%s.%N)
stow=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')

printf '{"QIDO PatientID p50_ms": %s, "QIDO PatientName wildcard p50_ms": %s, "QIDO StudyDate range p50_ms": %s, "QIDO all studies p50_ms": %s, "WADO-RS series retrieve MB/s": %.1f, "STOW instances/s (10 per request)": %s, "STOW statuses": "%s"}\n' \
  "$qido_id" "$qido_name" "$qido_date" "$qido_all" "$retrieve" "$stow" "$codes"
