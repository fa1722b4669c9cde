#!/usr/bin/env bash
# Sets up (scripts/setup.sh), checks the code (ruff lint and format, mypy) and runs the tests.
#   scripts/test.sh            everything: what .ci/run runs
#   scripts/test.sh --fast     the gates and tests/unit only (no kernel, no server: seconds)
#   scripts/test.sh ARGS…      the gates, then pytest ARGS… (e.g. tests/integration -k wandb)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
targets=()
if [ "${1:-}" = "--fast" ]; then
  shift
  targets=(tests/unit)
fi
echo "== ruff (lint, format) and mypy"
.venv/bin/ruff check artfs tests scripts
.venv/bin/ruff format --check artfs tests scripts
.venv/bin/mypy
echo "== pytest ${targets[*]:-tests} $*"
exec .venv/bin/python -m pytest "${targets[@]}" "$@"
