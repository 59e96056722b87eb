#!/usr/bin/env bash
# What authentication costs (issue 13, "Measure"): QIDO-RS p50 and WADO-RS
# series throughput of one release build with authentication off, and with
# HTTP Basic, a machine token (bearer), an OpenID Connect JWT (bearer, from
# oidc-provider on loopback, when node and tests/oidc/node_modules are
# there) and a session cookie.
#
#   bash bench/auth-overhead.sh [ROUNDS=7] [QIDO_REPEAT=200] [WADO_REPEAT=3]
#
# Every mode has its own server of the same binary holding the same data
# (1,000 studies x 5 small instances, and a 200-slice 512x512 CT series):
# one with nobody to sign in (authentication off), the others each with a
# user, a token and the provider, and each serving one way of signing in.
# So every server sees the same load, and a mode's numbers are not those of
# a server that has just streamed the other modes' WADO-RS series (an
# earlier version of this script shared one server between the four
# authenticated modes, which confounded the comparison). All run at once;
# bench/auth_overhead.py measures every mode in each round, in an order
# rotated per round, and reports every round and the medians. The audit
# trail is written in every mode (it is not part of the difference).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ROUNDS=${1:-7}
QIDO_REPEAT=${2:-200}
WADO_REPEAT=${3:-3}
PY=${PACS_PYTHON:-.venv/bin/python}
cargo build --release -q -p pacs -p sample-data
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/pacs-auth-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin/gen-sample-data" bench-index --studies 1000 --per-study 5 --out "$work/src" >/dev/null
"$bin/gen-sample-data" bench-ct --count 200 --out "$work/ct" >/dev/null
AUTHED="basic token cookie oidc"
for d in off $AUTHED; do
  "$bin/pacs" --data-dir "$work/$d" import "$work/src" "$work/ct" >/dev/null 2>&1
done
read -r CT_STUDY CT_SERIES < <("$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.StudyInstanceUID, d.SeriesInstanceUID)" "$work/ct/000001.dcm")
PID=$("$PY" -c "import glob,pydicom; print(pydicom.dcmread(sorted(glob.glob('$work/src/**/*.dcm', recursive=True))[0]).PatientID)")

PASSWORD=bench-password-1234
for d in $AUTHED; do
  printf '%s\n' "$PASSWORD" | "$bin/pacs" --data-dir "$work/$d" user add bench --role radiologist --password-stdin >/dev/null
done
TOKEN=$("$bin/pacs" --data-dir "$work/token" token create --name bench --role radiologist | tail -1)

port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
OFF=$(port)
declare -A PORT
for d in $AUTHED; do PORT[$d]=$(port); done
# Every authenticated server has the same configuration (the provider
# included, when it is there); each is measured in one mode only.
: >"$work/on.toml"
have_oidc=
if command -v node >/dev/null && [ -d tests/oidc/node_modules/oidc-provider ]; then
  OP=$(port)
  (cd tests/oidc && exec node op.mjs "$OP" >"$work/op.log" 2>&1) &
  pids+=($!)
  for _ in $(seq 1 300); do grep -qs '^ready' "$work/op.log" && break; sleep 0.1; done
  printf '[auth]\noidc_issuer = "http://127.0.0.1:%s"\noidc_audience = "urn:sen-pacs"\n' "$OP" >"$work/on.toml"
  have_oidc=1
fi
serve() { # DATA PORT CONFIG
  RUST_LOG=warn "$bin/pacs" --data-dir "$1" --config "$3" serve --http-listen "127.0.0.1:$2" \
    --dimse-listen "127.0.0.1:$(port)" >"$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "server on $2 did not start" >&2; cat "$1.log" >&2; return 1
}
: >"$work/off.toml"
serve "$work/off" "$OFF" "$work/off.toml"
for d in $AUTHED; do serve "$work/$d" "${PORT[$d]}" "$work/on.toml"; done

common="\"study\": \"$CT_STUDY\", \"series\": \"$CT_SERIES\", \"pid\": \"$PID\""
base() { echo "http://127.0.0.1:${PORT[$1]}/dicom-web"; }
jwt=""
if [ -n "$have_oidc" ]; then
  jwt=", {\"name\": \"oidc-jwt\", \"base\": \"$(base oidc)\", \"mint\": \"http://127.0.0.1:$OP/test/mint?kind=good\"}"
fi
cat >"$work/modes.json" <<JSON
[{"name": "off", "base": "http://127.0.0.1:$OFF/dicom-web"},
 {"name": "basic", "base": "$(base basic)", "basic": ["bench", "$PASSWORD"]},
 {"name": "token", "base": "$(base token)", "bearer": "$TOKEN"},
 {"name": "cookie", "base": "$(base cookie)", "login": ["bench", "$PASSWORD"]}$jwt]
JSON
"$PY" - "$work/modes.json" "$common" <<'EOF'
import json, sys
modes = json.load(open(sys.argv[1]))
extra = json.loads("{" + sys.argv[2] + "}")
json.dump([{**m, **extra} for m in modes], open(sys.argv[1], "w"))
EOF
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
"$PY" bench/auth_overhead.py "$work/modes.json" "$ROUNDS" "$QIDO_REPEAT" "$WADO_REPEAT"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
