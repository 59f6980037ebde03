#!/bin/sh
# The whole test suite (what CI runs). Creates .venv and installs the project on first use.
#   sh scripts/run_tests.sh [pytest arguments]
. "$(dirname "$0")/_env.sh"
cd "$ROOT" || exit 1
exec python -m pytest -q "$@"
