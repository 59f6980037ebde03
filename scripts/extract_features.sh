#!/bin/sh
# Frozen-backbone features of every video of a list, on every GPU of this node (or several nodes), or one CPU process.
#   sh scripts/extract_features.sh CONFIG.yaml LIST ROOT OUT [--layers all --pool cls --test_crops 3 ...]
# Re-running the same command resumes an interrupted extraction (complete shards are kept).
# Environment: as scripts/run_train_vision.sh (GPUS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, HOSTFILE).
if [ $# -lt 4 ]; then
    echo "usage: sh scripts/extract_features.sh CONFIG.yaml LIST ROOT OUT [extract_features arguments]" >&2
    exit 2
fi
CONFIG=$1
LIST=$2
DATA_ROOT=$3
OUT=$4
. "$(dirname "$0")/_launch.sh"
shift 4
launch extract_features.py --config "$CONFIG" --list "$LIST" --root "$DATA_ROOT" --out "$OUT" "$@"
