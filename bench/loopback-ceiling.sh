#!/usr/bin/env bash
# The most any HTTP server can deliver to curl over loopback on this
# machine: a minimal server answers every GET with the same 210 MB body
# straight from the page cache with sendfile(2) (no copy in user space, no
# framing), and curl reads it to /dev/null, RUNS times. Compare with the
# "WADO-RS series retrieve MB/s" of bench/query.sh (curl client), which
# moves the same amount (400 CT slices) per request.
#
#   bash bench/loopback-ceiling.sh [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
cargo build --release -q -p sample-data
work=$(mktemp -d /tmp/pacs-ceiling.XXXXXX)
srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"${CARGO_TARGET_DIR:-target}/release/gen-sample-data" bench-ct --count 400 --out "$work/ct" >/dev/null
cat "$work"/ct/*.dcm >"$work/body.bin"
python3 - "$work/body.bin" <<'PY' &
import os, socket, sys
path = sys.argv[1]
size = os.path.getsize(path)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 28999))
s.listen(4)
while True:
    c, _ = s.accept()
    try:
        while True:
            req = b""
            while b"\r\n\r\n" not in req:
                d = c.recv(65536)
                if not d:
                    raise EOFError
                req += d
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            with open(path, "rb") as f:
                c.sendfile(f)
    except Exception:
        c.close()
PY
srv=$!
cat "$work/body.bin" >/dev/null
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:28999/ && break; sleep 0.1; done
for _ in $(seq 1 "$RUNS"); do
  curl -sf -o /dev/null -w '%{size_download} %{time_total}\n' http://127.0.0.1:28999/
done | awk '{ print $1 / $2 / 1e6 }' | sort -n | awk '{ a[NR] = $1 } END { printf "sendfile server -> curl, %d runs: median %.0f MB/s (min %.0f, max %.0f)\n", NR, a[int((NR + 1) / 2)], a[1], a[NR] }'
