#!/usr/bin/env bash
# Distributed training with torchrun on MMEngine's launcher:
#   tools/dist_train.sh CONFIG NGPUS [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 tools/dist_train.sh CONFIG 8
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
DIR=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-$( [ -x "$DIR/../.venv/bin/python" ] && echo "$DIR/../.venv/bin/python" || echo python)}
PYTHONPATH="$DIR/..:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$GPUS" --master_port="$PORT" \
  "$DIR/train.py" "$CONFIG" --launcher pytorch "$@"
