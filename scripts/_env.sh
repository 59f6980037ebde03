# Shared by the scripts (sourced): create .venv in the project root and install the project if missing,
# then activate it. The caller's working directory is kept, so relative paths keep their meaning.
# The install prints one line per step; pip's own output goes to .venv/install.log and is shown if it fails.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "[side4video] creating $ROOT/.venv (first run only)"
    python3 -m venv "$ROOT/.venv" || { echo "error: python3 -m venv failed" >&2; exit 1; }
fi
. "$ROOT/.venv/bin/activate"
STAMP="$ROOT/.venv/.side4video-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    LOG="$ROOT/.venv/install.log"
    echo "[side4video] upgrading pip"
    python -m pip install --upgrade pip >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; echo "error: pip upgrade failed (log: $LOG)" >&2; exit 1; }
    echo "[side4video] installing the project and its dependencies into .venv (first run only, a few minutes)"
    python -m pip install --progress-bar off -e "$ROOT[dev,export,shards]" >>"$LOG" 2>&1 || {
        grep -E "^(ERROR|error)|error:" "$LOG" | tail -n 20 >&2
        tail -n 15 "$LOG" >&2
        echo "error: pip install failed; the whole log is $LOG" >&2
        exit 1
    }
    touch "$STAMP"
    echo "[side4video] installed"
fi
# Without CUDA, DeepSpeed uses its CPU accelerator (gloo); say so instead of letting it guess with a warning.
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cpu
fi
# DeepSpeed's compiled helpers live in this environment: another checkout's cache would make it rebuild them.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.venv/torch_extensions}"
export PYTHONUNBUFFERED=1
