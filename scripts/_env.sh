# Shared by the scripts: create .venv in the project root and install the project if missing.
# Sourced (not executed) so that the caller's shell gets the activated environment.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1
if [ ! -x .venv/bin/python ]; then
    echo "[side4video] creating .venv (first run only)"
    python3 -m venv .venv || { echo "error: python3 -m venv failed" >&2; exit 1; }
fi
. .venv/bin/activate
STAMP=.venv/.side4video-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "[side4video] installing the project and its dependencies into .venv (first run only, a few minutes)"
    python -m pip install --quiet --upgrade pip >/dev/null 2>&1
    python -m pip install --quiet -e '.[dev]' || { echo "error: pip install failed" >&2; exit 1; }
    touch "$STAMP"
fi
# Without CUDA, DeepSpeed uses its CPU accelerator (gloo); say so instead of letting it guess with a warning.
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu
fi
export PYTHONUNBUFFERED=1
