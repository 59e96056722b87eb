#!/usr/bin/env bash
# Several nodes against one: DCMTK storescu sending N synthetic 512x512 CT
# slices over 12 associations at once into Sen PACS on S3 (s3s-fs, disk-
# backed, signatures checked) and PostgreSQL (a throwaway cluster, fsync
# on), once into one `pacs serve` node and once into three nodes sharing the
# bucket and the database (association i to node i mod 3). Each run gets a
# fresh database and bucket. Prints the median rate of RUNS runs per node
# count, the ratio, and how busy the machine's CPUs were during the sending
# (from /proc/stat): when they are saturated, more nodes on the same cores
# cannot store faster.
#
#   S3FS=/path/to/s3s-fs bash bench/nodes-store.sh [N=1200] [RUNS=3]
#
# s3s-fs: `cargo install --locked s3s-fs@0.14.1 --features binary` (tests/run.sh
# installs it into target/tools/bin). PostgreSQL: Debian `postgresql`.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-1200}
RUNS=${2:-3}
S3FS=${S3FS:-target/tools/bin/s3s-fs}
[ -x "$S3FS" ] || { echo "missing s3s-fs ($S3FS): set S3FS" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "missing PostgreSQL: apt-get install postgresql" >&2; exit 1; }
for t in /usr/bin/storescu /usr/bin/echoscu; do
  [ -x "$t" ] || { echo "missing $t: apt-get install dcmtk" >&2; exit 1; }
done
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)

work=$(mktemp -d /tmp/pacs-nodes-bench.XXXXXX)
chmod 755 "$work"
pids=()
pg_up=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$pg_up" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/gen-sample-data" bench-ct --count "$N" --out "$work/src" >/dev/null
i=0
for f in "$work"/src/*.dcm; do
  d="$work/split/$((i % 12))"; mkdir -p "$d"; ln -s "$f" "$d/"; i=$((i + 1))
done

mkdir -p "$work/pg" "$work/sock"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg" "$work/sock"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U pacs --auth=trust -E UTF8 >/dev/null
pg_port=25432
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/sock/pg.log" -w -t 60 \
  -o "-p $pg_port -k $work/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
pg_up=1

s3_port=25433
mkdir -p "$work/s3"
"$S3FS" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key benchsecret \
  "$work/s3" >"$work/s3s.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break
  sleep 0.1
done

now() { date +%s.%N; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

results="$work/results.txt"
: >"$results"
for run in $(seq 1 "$RUNS"); do
  for nodes in 1 3; do
    name="r${run}n${nodes}"
    "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U pacs "$name"
    mkdir -p "$work/s3/b$name"
    cat >"$work/$name.toml" <<TOML
strict_ae = false
storage_url = "s3://b$name/archive"
index_url = "postgres://pacs@127.0.0.1:$pg_port/$name"

[s3]
endpoint = "http://127.0.0.1:$s3_port"
region = "us-east-1"
path_style = true
allow_http = true
access_key_id = "bench"
secret_access_key = "benchsecret"
TOML
    node_pids=()
    ports=()
    for n in $(seq 1 "$nodes"); do
      dport=$((26000 + n))
      "$bin/pacs" --data-dir "$work/$name-node$n" serve --config "$work/$name.toml" \
        --http-listen "127.0.0.1:$((27000 + n))" --dimse-listen "127.0.0.1:$dport" \
        >"$work/$name-node$n.log" 2>&1 &
      node_pids+=("$!")
      pids+=("$!")
      ports+=("$dport")
    done
    for p in "${ports[@]}"; do wait_echo PACS "$p"; done
    sync
    read -r b0 t0c < <(busy)
    t0=$(now)
    senders=()
    for a in $(seq 0 11); do
      p=${ports[$((a % nodes))]}
      TCP_NODELAY=1 /usr/bin/storescu -aec PACS +sd 127.0.0.1 "$p" "$work/split/$a" >/dev/null 2>&1 &
      senders+=($!)
    done
    for s in "${senders[@]}"; do wait "$s"; done
    t1=$(now)
    read -r b1 t1c < <(busy)
    for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    stored=$("$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U pacs -d "$name" -Atc "SELECT count(*) FROM instances")
    secs=$(echo "$t1 - $t0" | bc -l)
    cpu=$(echo "100 * ($b1 - $b0) / ($t1c - $t0c)" | bc -l)
    printf '%s %s %.3f %s %.1f\n' "$nodes" "$run" "$secs" "$stored" "$cpu" | tee -a "$results"
    if [ "$stored" != "$N" ]; then
      echo "run $run, $nodes node(s): $stored of $N instances indexed" >&2
      exit 1
    fi
  done
done
python3 - "$N" "$results" <<'PY'
import statistics, sys
n = int(sys.argv[1])
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
med = {}
for nodes in ("1", "3"):
    secs = statistics.median(float(r[2]) for r in rows if r[0] == nodes)
    cpu = statistics.median(float(r[4]) for r in rows if r[0] == nodes)
    med[nodes] = secs
    print(f"{nodes} node(s), 12 associations: {n / secs:7.1f} instances/s (median {secs:.2f} s), CPUs {cpu:.0f} % busy")
print(f"3 nodes / 1 node: {med['1'] / med['3']:.2f}x")
PY
