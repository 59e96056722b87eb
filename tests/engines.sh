#!/usr/bin/env bash
# The second pass of tests/run.sh: the DIMSE and DICOMweb suites (the test
# binaries of dimse-scp/tests and dicomweb/tests, as the first pass built
# them) run again with every archive they open on PostgreSQL and S3 instead
# of sled and the local disk: PACS_TEST_ENGINES=postgres-s3 makes
# pacs-testkit's fixtures give each archive a database of its own on a
# throwaway PostgreSQL cluster and a bucket of its own on a moto S3 server,
# both started here on 127.0.0.1 and stopped on exit. Prints the test
# binaries' output ("test result:" lines included); exits 1 if a test fails.
# The DIMSE and DICOMweb suites' servers run as three nodes sharing one
# database and bucket (PACS_TEST_NODES=3): consecutive associations of a
# DIMSE test land on different nodes (a round-robin TCP balancer), and
# consecutive requests of a DICOMweb test too (a router sending each to the
# next node's routes, each node its own view of the database and bucket).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*" >&2; }

python="${PACS_PYTHON:-$root/.venv/bin/python}"
bindir="${PACS_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
if [ ! -x "$bindir/initdb" ]; then
  echo "engines pass: PostgreSQL's initdb is missing (tests/run.sh installs it)" >&2
  exit 1
fi
if ! "$python" -c 'import moto.server' 2>/dev/null; then
  echo "engines pass: $python cannot import moto.server (tests/run.sh installs it)" >&2
  exit 1
fi

work=$(mktemp -d)
chmod 755 "$work"
pg_started=
moto_pid=
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_started" ]; then
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

log "engines pass: a PostgreSQL cluster and a moto S3 server on 127.0.0.1"
mkdir -p "$work/pg" "$work/sock"
if [ "$(id -u)" = 0 ]; then
  chown postgres "$work/pg" "$work/sock"
fi
"${as_pg[@]}" "$bindir/initdb" -D "$work/pg" -U pacs --auth=trust -E UTF8 >/dev/null
pg_port=$(free_port)
# fsync off: this pass checks behaviour on the engines, not their disks.
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/pg" -l "$work/sock/pg.log" -w -t 60 \
  -o "-p $pg_port -k $work/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
  start >/dev/null
pg_started=1

s3_port=$(free_port)
"$python" -m moto.server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 300); do
  if "$python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$s3_port/', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "engines pass: moto exited at start:" >&2
    cat "$work/moto.log" >&2
    exit 1
  fi
  sleep 0.2
done

# The suites' test binaries, exactly as the first pass built them (same
# features: no rebuild).
mapfile -t binaries < <(cargo test --workspace --all-targets --locked --no-run --message-format=json 2>/dev/null |
  "$python" -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if m["target"]["kind"] != ["test"]:
        continue
    d = os.path.dirname(m["manifest_path"])
    if os.path.basename(d) in ("dimse-scp", "dicomweb"):
        print(d + "\t" + m["executable"])
')
if [ "${#binaries[@]}" -eq 0 ]; then
  echo "engines pass: no test binaries of dimse-scp or dicomweb found" >&2
  exit 1
fi

export PACS_TEST_ENGINES=postgres-s3
# The DIMSE and DICOMweb suites' servers run as three nodes on one
# database and bucket (their tests of per-node limits on one).
export PACS_TEST_NODES=3
export PACS_TEST_PG="postgres://pacs@127.0.0.1:$pg_port/postgres"
export PACS_PG_BINDIR="$bindir"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true

status=0
for entry in "${binaries[@]}"; do
  dir=${entry%%$'\t'*}
  exe=${entry#*$'\t'}
  log "engines pass (PostgreSQL + S3): $(basename "$dir")/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"
  if ! (cd "$dir" && "$exe" "$@"); then
    status=1
  fi
done
# The pass proves something only if the archives were really opened there.
databases=$("$bindir/psql" -h 127.0.0.1 -p "$pg_port" -U pacs -d postgres -Atc \
  "SELECT count(*) FROM pg_database WHERE datname ~ '^(t[0-9]+x[0-9]+|d[0-9a-f]{24})$'")
buckets=$("$python" -c "
import urllib.request
body = urllib.request.urlopen('http://127.0.0.1:$s3_port/', timeout=10).read().decode()
print(body.count('<Name>'))")
log "engines pass: the suites opened $databases PostgreSQL databases and $buckets S3 buckets"
if [ "$databases" -lt 20 ] || [ "$buckets" -lt 20 ]; then
  echo "engines pass: too few archives were opened on PostgreSQL and S3: the fixtures did not switch engines" >&2
  status=1
fi
exit "$status"
