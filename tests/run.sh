#!/usr/bin/env bash
# Runs every test of Sen PACS. On a fresh machine it first sets up what the
# tests need when it is missing: DCMTK and Chromium (apt, when run as root),
# the viewer's npm packages (npm ci in viewer-web/app), a Python venv in .venv
# with the pinned packages of tests/requirements.txt (pydicom's real-world
# corpus, pynetdicom, dicomweb-client, moto for the S3 tests), and s3s-fs (the
# disk-backed S3 server, cargo install into target/tools). Then: cargo test --no-fail-fast, so that
# a failing test binary does not hide the results of the others, and (with no
# arguments) tests/engines.sh: the DIMSE and DICOMweb suites again on
# PostgreSQL + S3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*" >&2; }

# apt_install WHAT PACKAGE: installs a Debian package when root, else says how.
apt_install() {
  if [ "$(id -u)" = 0 ]; then
    log "installing $1 (apt-get install $2)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$2" >/dev/null
  else
    log "$1 is missing and this is not root: install it with 'sudo apt-get install $2'"
  fi
}

if ! command -v storescu >/dev/null 2>&1 || ! command -v dcmdump >/dev/null 2>&1; then
  apt_install DCMTK dcmtk
fi
# The TLS and OpenID Connect tests make their test certificates with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  apt_install "openssl for the test certificates" openssl
fi
# The viewer's saved SR and key-object documents are validated with dciodvfy.
if [ ! -x /usr/bin/dciodvfy ]; then
  apt_install "dicom3tools (dciodvfy)" dicom3tools
fi
# The PostgreSQL index tests start a throwaway cluster (initdb + pg_ctl from
# /usr/lib/postgresql/<version>/bin, which Debian does not put on PATH).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PACS_PG_BINDIR:-}" ]; then
  apt_install "PostgreSQL for the index tests" postgresql
fi
chromium="${PACS_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  apt_install "Chromium for the browser tests" chromium
fi

# The viewer's packages (build.rs does the same; the stamp and the lock are shared).
app="$root/viewer-web/app"
if command -v npm >/dev/null 2>&1; then
  if ! cmp -s "$app/package-lock.json" "$app/node_modules/.sen-pacs-lock"; then
    log "npm ci in viewer-web/app (pinned: package-lock.json)"
    (cd "$app" && flock "$app/.build.lock" npm ci --no-audit --no-fund >/dev/null)
    cp "$app/package-lock.json" "$app/node_modules/.sen-pacs-lock"
  fi
  # The OpenID Connect provider of tests/oidc.rs (oidc-provider, pinned).
  if [ ! -d "$root/tests/oidc/node_modules/oidc-provider" ]; then
    log "npm ci in tests/oidc (pinned: package-lock.json)"
    (cd "$root/tests/oidc" && npm ci --no-audit --no-fund >/dev/null)
  fi
else
  log "npm is missing: the viewer is built with Node.js 20+ and npm (apt-get install nodejs npm)"
fi

venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "setting up the Python venv in .venv (pinned: tests/requirements.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi
export PACS_PYTHON="$venv/bin/python"

# The disk-backed S3 server of the durability tests (tests/s3.rs): s3s-fs
# from crates.io, built with the lock file it was published with.
if [ -z "${PACS_S3S_FS:-}" ]; then
  s3s="$root/target/tools/bin/s3s-fs"
  if [ ! -x "$s3s" ]; then
    log "cargo install s3s-fs 0.14.1 into target/tools (the disk-backed S3 server of the durability tests)"
    cargo install --locked --quiet --root "$root/target/tools" s3s-fs@0.14.1 --features binary
  fi
  export PACS_S3S_FS="$s3s"
fi
PACS_PYDICOM_DATA="$("$PACS_PYTHON" -c 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data"))')"
export PACS_PYDICOM_DATA
# Tests that need the corpus or the peers fail instead of skipping.
export PACS_REQUIRE_PEERS=1

log "cargo test --workspace --all-targets --locked --no-fail-fast"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace --all-targets --locked --no-fail-fast "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
# The whole suite (no arguments): the DIMSE and DICOMweb suites once more,
# on PostgreSQL and S3 (tests/engines.sh).
if [ "$#" -eq 0 ]; then
  bash tests/engines.sh 2>&1 | tee -a "$out"
  engines=${PIPESTATUS[0]}
  if [ "$status" = 0 ]; then
    status=$engines
  fi
fi
set -e
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$out"
exit "$status"
