# Shared by the scripts (sourced): create .venv in the project root and install the project if missing,
# then activate it. The caller's working directory is kept, so relative paths keep their meaning.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "[side4video] creating $ROOT/.venv (first run only)"
    python3 -m venv "$ROOT/.venv" || { echo "error: python3 -m venv failed" >&2; exit 1; }
fi
. "$ROOT/.venv/bin/activate"
STAMP="$ROOT/.venv/.side4video-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "[side4video] installing the project and its dependencies into .venv (first run only, a few minutes)"
    python -m pip install --quiet --upgrade pip >/dev/null 2>&1
    python -m pip install --quiet -e "$ROOT[dev]" || { echo "error: pip install failed" >&2; exit 1; }
    touch "$STAMP"
fi
# Without CUDA, DeepSpeed uses its CPU accelerator (gloo); say so instead of letting it guess with a warning.
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu
fi
export PYTHONUNBUFFERED=1
