#!/usr/bin/env bash
# Distributed training with torchrun on MMEngine's launcher:
#   tools/dist_train.sh CONFIG NGPUS [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 tools/dist_train.sh CONFIG 8
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
exec "$(dirname "$0")/_torchrun.sh" "$GPUS" train.py "$CONFIG" --launcher pytorch "$@"
