#!/usr/bin/env bash
# torchrun on MMEngine's launcher, shared by dist_train.sh and dist_test.sh:
#   tools/_torchrun.sh NPROC SCRIPT [script args...]    (SCRIPT relative to tools/; the callers pass --launcher pytorch)
# Several nodes: NNODES, NODE_RANK, MASTER_ADDR and PORT (defaults 1, 0, 127.0.0.1, 29500).
set -euo pipefail
NPROC=$1
SCRIPT=$2
shift 2
DIR=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-$( [ -x "$DIR/../.venv/bin/python" ] && echo "$DIR/../.venv/bin/python" || echo python)}
PYTHONPATH="$DIR/..:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
  "$DIR/$SCRIPT" "$@"
