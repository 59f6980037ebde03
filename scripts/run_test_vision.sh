#!/bin/sh
# Multi-view testing of a checkpoint, on every GPU of this node (or several nodes), or one CPU process.
#   sh scripts/run_test_vision.sh CONFIG.yaml CHECKPOINT [--test_crops 3 --test_clips 2 ...]
# Environment: as scripts/run_train_vision.sh (GPUS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, HOSTFILE).
. "$(dirname "$0")/_launch.sh"
if [ $# -lt 2 ]; then
    echo "usage: sh scripts/run_test_vision.sh CONFIG.yaml CHECKPOINT [test.py arguments]" >&2
    exit 2
fi
CONFIG=$1
WEIGHTS=$2
shift 2
launch test.py --config "$CONFIG" --weights "$WEIGHTS" "$@"
