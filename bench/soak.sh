#!/usr/bin/env bash
# Soak benchmark: a bounded run of mixed load against one `pacs serve`,
# reporting how memory, open files and latencies drift over time.
#
# At once, until DURATION seconds have passed:
#   - 4 DCMTK storescu loops, each sending a batch of the demo CT's slices
#     under fresh Study/Series/SOP Instance UIDs (dcmodify), then pausing
#     PAUSE seconds (so the disk does not fill: about 1 batch of 12 slices per
#     loop every few seconds);
#   - QIDO-RS (studies with a name search, instances without keys);
#   - WADO-RS (the demo CT series, multipart);
#   - thumbnails (study thumbnail);
#   - C-FIND (findscu, study level).
# Every SAMPLE seconds the server's RSS and open file descriptors are read
# from /proc. At the end: per time window, p50/p99 latency per kind, RSS and
# fds, and the drift from the first window (after warm-up) to the last.
#
#   bash bench/soak.sh [DURATION=1800] [SAMPLE=10] [PAUSE=2]
#
# SOAK_KEEP=N makes each store loop keep only its last N batches: after
# each store it deletes its oldest study (DELETE /api/v1/studies/{uid}), so
# the archive holds a steady number of instances and what RSS still does is
# not the index growing (a leak would still show).
# SOAK_PORT (default 24112) moves the DIMSE port (HTTP is SOAK_PORT+68), so
# two soaks can run side by side; SOAK_SERVER_ENV ("NAME=value ...") is put
# in the server's environment only (e.g. an allocator to compare:
# SOAK_SERVER_ENV="LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2").
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${1:-1800}
SAMPLE=${2:-10}
PAUSE=${3:-2}
cargo build --release -q -p pacs
bin=${CARGO_TARGET_DIR:-target}/release
for t in /usr/bin/storescu /usr/bin/findscu /usr/bin/echoscu /usr/bin/dcmodify curl python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install dcmtk curl" >&2; exit 1; }
done
work=$(mktemp -d /tmp/pacs-soak.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

dport=${SOAK_PORT:-24112}
hport=$((dport + 68))
base="http://127.0.0.1:$hport"
# C-FIND needs a listed AE even in --demo (query/retrieve peers are bound
# to an address).
printf '[[remote_ae]]\nae_title = "FINDSCU"\nhost = "127.0.0.1"\nport = 1\n' >"$work/pacs.toml"
# shellcheck disable=SC2086 # SOAK_SERVER_ENV is a list of NAME=value words
env ${SOAK_SERVER_ENV:-} "$bin/pacs" --data-dir "$work/data" serve --demo --config "$work/pacs.toml" \
  --http-listen "127.0.0.1:$hport" \
  --dimse-listen "127.0.0.1:$dport" >"$work/pacs.log" 2>&1 &
server=$!
pids+=("$server")
wait_echo PACS "$dport"
for _ in $(seq 1 300); do
  curl -sf "$base/healthz" >/dev/null && break
  sleep 0.1
done

read -r study series < <(python3 - <<'PY'
import json
m = json.load(open("sample-data/manifest.json"))
f = [x for x in m["files"] if x["study"] == "ct-phantom"]
print(f[0]["study_instance_uid"], f[0]["series_instance_uid"])
PY
)
template="sample-data/studies/ct-phantom/1"
end=$(( $(date +%s) + DURATION ))
lat="$work/latency.txt"
: >"$lat"
now_ms() { date +%s%3N; }

# Appends "t_ms kind ms" for each request of a loop.
KEEP=${SOAK_KEEP:-0}
store_loop() { # n
  local n=$1 dir="$work/batch-$n" k=0 t0 t1 uid kept=() code
  while [ "$(date +%s)" -lt "$end" ]; do
    rm -rf "$dir"; mkdir -p "$dir"; cp "$template"/*.dcm "$dir/"
    k=$((k + 1))
    uid="2.25.$(( (RANDOM << 30) | (RANDOM << 15) | RANDOM ))$n$k$(date +%s%N | tail -c 10)"
    /usr/bin/dcmodify -nb -q -gin -m "(0020,000D)=$uid" -m "(0020,000E)=$uid.1" "$dir"/*.dcm
    t0=$(now_ms)
    TCP_NODELAY=1 /usr/bin/storescu -aec PACS +sd 127.0.0.1 "$dport" "$dir" >/dev/null 2>&1 \
      && t1=$(now_ms) && echo "$t0 store_batch $((t1 - t0))" >>"$lat" && kept+=("$uid")
    if [ "$KEEP" -gt 0 ] && [ "${#kept[@]}" -gt "$KEEP" ]; then
      t0=$(now_ms)
      code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$base/api/v1/studies/${kept[0]}")
      t1=$(now_ms)
      if [ "$code" = 200 ]; then echo "$t0 delete_study $((t1 - t0))" >>"$lat"; else echo "$t0 delete_study_error 0" >>"$lat"; fi
      kept=("${kept[@]:1}")
    fi
    sleep "$PAUSE"
  done
}
http_loop() { # kind url [accept]
  local kind=$1 url=$2 accept=${3:-application/dicom+json} t
  while [ "$(date +%s)" -lt "$end" ]; do
    t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H "Accept: $accept" "$url")
    case $t in
      2*) echo "$(now_ms) $kind $(python3 -c "print(round(${t#* }*1000,2))")" >>"$lat" ;;
      *) echo "$(now_ms) ${kind}_error 0" >>"$lat" ;;
    esac
  done
}
find_loop() {
  local t0 t1
  while [ "$(date +%s)" -lt "$end" ]; do
    t0=$(now_ms)
    if /usr/bin/findscu -aec PACS -S -k QueryRetrieveLevel=STUDY -k PatientName='Nguy*' \
      -k StudyInstanceUID 127.0.0.1 "$dport" >"$work/find.out" 2>&1 \
      && ! grep -qiE "refused|failed|error" "$work/find.out"; then
      t1=$(now_ms); echo "$t0 cfind $((t1 - t0))" >>"$lat"
    else
      echo "$t0 cfind_error 0" >>"$lat"
    fi
  done
}
sampler() {
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$server" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    fds=$(ls "/proc/$server/fd" | wc -l)
    echo "$(now_ms) $rss $fds" >>"$work/samples.txt"
    sleep "$SAMPLE"
  done
}

echo "soak: ${DURATION}s of mixed load against pacs (pid $server), sampling every ${SAMPLE}s" >&2
t_start=$(now_ms)
loops=()
for n in 1 2 3 4; do store_loop "$n" & loops+=($!); done
http_loop qido_name "$base/dicom-web/studies?PatientName=Nguy*&limit=20" & loops+=($!)
http_loop qido_instances "$base/dicom-web/instances?limit=100" & loops+=($!)
http_loop wado_series "$base/dicom-web/studies/$study/series/$series" \
  'multipart/related; type="application/dicom"; transfer-syntax=*' & loops+=($!)
http_loop thumbnail "$base/dicom-web/studies/$study/thumbnail" image/jpeg & loops+=($!)
find_loop & loops+=($!)
sampler & loops+=($!)
pids+=("${loops[@]}")
for p in "${loops[@]}"; do wait "$p" || true; done
kill -0 "$server" 2>/dev/null || { echo "the server died during the soak; log: $work/pacs.log" >&2; tail -20 "$work/pacs.log" >&2; exit 1; }

slices=$(find "$template" -name '*.dcm' | wc -l)
python3 - "$t_start" "$lat" "$work/samples.txt" "$DURATION" "$slices" <<'PY'
import sys, statistics
t0, lat, samples, duration = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
slices = int(sys.argv[5])
windows = 6
span = duration * 1000 / windows
def w(t): return min(windows - 1, max(0, int((t - t0) // span)))
by = {}
for line in open(lat):
    t, kind, ms = line.split()
    by.setdefault(kind, [[] for _ in range(windows)])[w(int(t))].append(float(ms))
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
print(f"| kind | " + " | ".join(f"w{i+1} p50/p99 ms" for i in range(windows)) + " | n | p50 drift w2→w6 |")
print("|---" * (windows + 3) + "|")
for kind, ws in sorted(by.items()):
    cells = [f"{pct(x,.5):.0f}/{pct(x,.99):.0f}" if x else "-" for x in ws]
    n = sum(len(x) for x in ws)
    a, b = pct(ws[1], .5), pct(ws[-1], .5)
    drift = f"{(b - a) / a * 100:+.0f} %" if ws[1] and ws[-1] and a else "-"
    print(f"| {kind} | " + " | ".join(cells) + f" | {n} | {drift} |")
rss = [[] for _ in range(windows)]
fds = [[] for _ in range(windows)]
for line in open(samples):
    t, r, f = line.split()
    rss[w(int(t))].append(int(r) / 1024)
    fds[w(int(t))].append(int(f))
print()
# Instances held at the end of each window (stored batches x slices).
held, total = [], 0
none = [[] for _ in range(windows)]
for added, removed in zip(by.get("store_batch", none), by.get("delete_study", none)):
    total += (len(added) - len(removed)) * slices
    held.append(total)
print("| window | RSS MiB (median) | open fds (median) | instances held (end) |")
print("|---|---|---|---|")
for i in range(windows):
    if rss[i]:
        print(f"| w{i+1} | {statistics.median(rss[i]):.0f} | {statistics.median(fds[i]):.0f} | {held[i]} |")
if rss[1] and rss[-1]:
    grow = statistics.median(rss[-1]) - statistics.median(rss[1])
    added = held[-1] - held[1]
    per = f"; {grow * 1024 * 1024 / added:.0f} bytes of RSS per instance added" if added > 0 else ""
    print(f"\nRSS drift w2→w6: {grow:+.0f} MiB over {added} instances added{per}; "
          f"fd drift: {statistics.median(fds[-1]) - statistics.median(fds[1]):+.0f}")
PY
