#!/usr/bin/env bash
# Distributed testing with torchrun on MMEngine's launcher:
#   tools/dist_test.sh CONFIG CHECKPOINT NGPUS [test.py args...]
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 tools/dist_test.sh CONFIG CKPT 8
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "$(dirname "$0")/_torchrun.sh" "$GPUS" test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
