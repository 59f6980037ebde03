#!/bin/sh
# The whole test suite (what CI runs): ruff, then pytest. Creates .venv and installs the project on first use.
#   sh scripts/run_tests.sh [pytest arguments]
. "$(dirname "$0")/_env.sh"
cd "$ROOT" || exit 1
python -m ruff check --quiet . || { echo "error: ruff found problems (above); fix them or run: ruff check --fix ." >&2; exit 1; }
exec python -m pytest -q "$@"
