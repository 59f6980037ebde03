# Shared launcher logic for run_train_vision.sh / run_test_vision.sh (sourced).
. "$(dirname "$0")/_env.sh"
if [ $# -lt 1 ]; then
    echo "usage: sh $0 CONFIG.yaml [arguments]" >&2
    exit 2
fi
NUM_GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
GPUS=${GPUS:-$NUM_GPUS}
[ "$GPUS" -ge 1 ] 2>/dev/null || GPUS=1
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$(python -c "import socket; s=socket.socket(); s.bind(('',0)); print(s.getsockname()[1])")}

launch() {
    SCRIPT="$ROOT/$1"
    shift
    case "$1" in
        *.yaml|*.yml) set -- --config "$@" ;;
    esac
    if [ -n "$HOSTFILE" ]; then
        # DeepSpeed's launcher starts the processes on every host of the hostfile (passwordless ssh).
        exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$SCRIPT" "$@"
    elif [ "$GPUS" -gt 1 ] || [ "$NNODES" -gt 1 ]; then
        exec python -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
            --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$SCRIPT" "$@"
    else
        exec python "$SCRIPT" "$@"
    fi
}
