#!/usr/bin/env bash
# Checks that OHIF Viewer's prebuilt app (@ohif/app, served statically) lists and displays the
# demo studies through Sen PACS's /dicom-web. Not part of tests/run.sh: it downloads OHIF
# (about 50 MB packed, 200 MB unpacked). See docs/ohif.md.
#
#   bash tests/ohif/run.sh
#
# Environment:
#   PACS_BIN      the pacs binary (default target/release/pacs)
#   OUT_DIR       screenshots, requests.json, results.json, pacs.log (default target/ohif-check)
#   CHROMIUM      the browser (default /usr/bin/chromium)
#   OHIF_ARCHIVE  'direct' configures OHIF with the archive's own origin (cross-origin) instead
#                 of the same-origin forwarding path
#   SERVE_ONLY    set: start the archive and OHIF, print OHIF's address, and wait (Ctrl-C ends)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pacs_bin=${PACS_BIN:-$root/target/release/pacs}
out_dir=${OUT_DIR:-$root/target/ohif-check}
chromium_bin=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$pacs_bin" ]; then
  echo "no pacs binary at $pacs_bin: run 'cargo build --release' or set PACS_BIN" >&2
  exit 2
fi
if [ ! -x "$chromium_bin" ]; then
  echo "no Chromium at $chromium_bin: apt-get install chromium, or set CHROMIUM" >&2
  exit 2
fi

pacs_bin=$(realpath "$pacs_bin")
out_dir=$(realpath -m "$out_dir")

cd "$here"
npm ci --ignore-scripts --no-audit --no-fund

# OHIF's app is a prebuilt bundle: only its dist/ is needed, not its npm dependencies (which
# would be installed for nothing, and some of which, e.g. @ohif/i18n@3.13.2, the registry we
# use does not serve, so `npm ci` of @ohif/app fails). It is fetched with `npm pack` at the
# version and integrity pinned in package.json ("ohifApp") and unpacked under target/.
ohif_version=$(node -p "require('./package.json').ohifApp.version")
ohif_integrity=$(node -p "require('./package.json').ohifApp.integrity")
ohif_dir=$root/target/ohif-app-$ohif_version
if [ ! -f "$ohif_dir/package/dist/index.html" ]; then
  rm -rf "$ohif_dir"
  mkdir -p "$ohif_dir"
  (cd "$ohif_dir" && npm pack "@ohif/app@$ohif_version" --silent >/dev/null)
  tarball=$ohif_dir/ohif-app-$ohif_version.tgz
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$got" != "$ohif_integrity" ]; then
    echo "@ohif/app@$ohif_version: integrity $got, expected $ohif_integrity" >&2
    exit 1
  fi
  tar -xzf "$tarball" -C "$ohif_dir"
  rm -f "$tarball"
fi

mkdir -p "$out_dir"
rm -f "$out_dir"/*.png "$out_dir"/*.json "$out_dir"/*.txt
data_dir=$(mktemp -d)
pacs_pid=
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  if [ -n "$pacs_pid" ]; then
    kill "$pacs_pid" 2>/dev/null || true
    wait "$pacs_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}
http_port=$(free_port)
dimse_port=$(free_port)
# Cross-origin: the archive must send CORS headers for OHIF's origin.
if [ "${OHIF_ARCHIVE:-}" = direct ]; then
  export PACS_CORS_ALLOWED_ORIGINS='*'
fi
NO_COLOR=1 "$pacs_bin" --data-dir "$data_dir" serve --demo \
  --http-listen "127.0.0.1:$http_port" --dimse-listen "127.0.0.1:$dimse_port" \
  >"$out_dir/pacs.log" 2>&1 &
pacs_pid=$!

pacs_url=http://127.0.0.1:$http_port
for _ in $(seq 1 300); do
  if curl -fs -o /dev/null "$pacs_url/dicom-web/studies?limit=1"; then
    break
  fi
  if ! kill -0 "$pacs_pid" 2>/dev/null; then
    echo "pacs exited; log:" >&2
    cat "$out_dir/pacs.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS -o /dev/null "$pacs_url/dicom-web/studies?limit=1"

PACS_URL=$pacs_url OHIF_DIST=$ohif_dir/package/dist OUT_DIR=$out_dir \
  MANIFEST=$root/sample-data/manifest.json CHROMIUM=$chromium_bin OHIF_VERSION=$ohif_version \
  node "$here/check.mjs" &
node_pid=$!
status=0
wait "$node_pid" || status=$?
node_pid=
echo "OHIF $ohif_version check: $([ "$status" = 0 ] && echo passed || echo FAILED); screenshots and report in $out_dir"
exit "$status"
