#!/bin/sh
# Train with DeepSpeed on every GPU of this node (or of several nodes), or one CPU process.
#   sh scripts/run_train_vision.sh CONFIG.yaml [train.py arguments, e.g. --output DIR --opts solver.lr=1e-4]
# Environment:
#   GPUS=N                 processes on this node (default: all visible GPUs, or 1 without GPUs)
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node with torchrun (run this on every node)
#   HOSTFILE=path          multi-node with the DeepSpeed launcher instead (run on the first node only)
. "$(dirname "$0")/_launch.sh"
launch train.py "$@"
