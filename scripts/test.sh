#!/usr/bin/env bash
# Sets up and runs every check: ruff (lint + format), mypy, and pytest (which includes buf lint,
# buf format, the breaking-change check, the generated-code freshness check and all test suites).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"; mypy
echo "== pytest"; pytest "$@"
