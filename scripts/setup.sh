#!/usr/bin/env bash
# Sets up everything Exthub needs on a fresh machine: a virtual environment with the pinned Python
# packages (requirements.lock), the project itself in editable mode, and the local Azure stand-ins
# (the Cosmos DB emulator and Azurite, pinned in package-lock.json) under node_modules/.
# Idempotent: a second run only reinstalls what changed (requirements.lock, pyproject.toml, package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.exthub-setup-stamp"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "setup: installing pinned packages (requirements.lock)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$STAMP"
fi
# Source roots on the venv's path: the repository (services, exthub, tools) and the generated stubs.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n%s\n' "$PWD" "$PWD/gen/python" > "$site/exthub-source-roots.pth"

NPM_STAMP="node_modules/.exthub-setup-stamp"
want_npm="$(sha256sum package-lock.json | cut -d' ' -f1)"
have_npm="$(cat "$NPM_STAMP" 2>/dev/null || true)"
if [ "$want_npm" != "$have_npm" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm (Node.js 20) is required for the Azure emulators; install nodejs and npm" >&2
    exit 1
  fi
  echo "setup: installing the Azure emulators (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want_npm" > "$NPM_STAMP"
fi
echo "setup: ready ($VENV, node_modules)"
