#!/usr/bin/env bash
# Create .venv in the checkout and install the ropevit stack into it.
#
# The one step that does not "just pip install" is mmcv 2.1.0: PyPI only has its
# source distribution, its setup.py imports pkg_resources (kept by setuptools < 81; torch 2.14 needs >= 77) and
# asks for -std=c++17, while torch >= 2.10 headers need C++20. We build it once,
# without build isolation (an isolated build would fetch another torch), and
# cache the wheel under $ROPEVIT_CACHE keyed by mmcv, torch and Python versions,
# so every later clone (and every CI run) installs it in seconds.
#
# Idempotent: re-running only installs what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
CACHE=${ROPEVIT_CACHE:-$HOME/.cache/ropevit}
MMCV_VERSION=2.1.0
STEP="start"

log() { echo "[setup] $*"; }
trap 'rc=$?; [ $rc -ne 0 ] && echo "[setup] FAILED during: $STEP (exit $rc). See the output above; re-run \`make setup\` after fixing it." >&2' EXIT

STEP="create the virtual environment $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || { echo "[setup] $PYTHON not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  log "$STEP with $PYTHON"
  "$PYTHON" -m venv "$VENV"
else
  log "virtual environment $VENV exists"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

STEP="install torch, torchvision and the build tools"
log "$STEP"
torch_pin=$(grep -E '^torch==' requirements.txt)
tv_pin=$(grep -E '^torchvision==' requirements.txt)
"${PIP[@]}" install -q "$torch_pin" "$tv_pin" 'setuptools>=77.0.3,<81' wheel ninja

torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key="mmcv-${MMCV_VERSION}_torch-${torch_version}_${py_tag}_cpu"
wheel_dir="$CACHE/wheels/$key"

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  log "mmcv $MMCV_VERSION with compiled ops already installed"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    STEP="build mmcv $MMCV_VERSION with CPU ops (one time, ~9 min on 2 cores)"
    log "$STEP -> $wheel_dir"
    build=$(mktemp -d)
    "${PIP[@]}" download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # The C++ standard the installed torch's headers require.
    std=$("$PY" -c 'import torch; v=tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); print("c++20" if v >= (2, 10) else "c++17")')
    sed -i -E "s/-std=c\+\+1[47]/-std=$std/g" "$src/setup.py"
    mkdir -p "$wheel_dir.tmp"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
      "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$wheel_dir.tmp" "$src"
    rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"   # publish only a finished wheel
    rm -rf "$build"
  else
    log "using cached mmcv wheel from $wheel_dir"
  fi
  STEP="install the mmcv wheel"
  "${PIP[@]}" install -q --no-deps "$wheel_dir"/mmcv-*.whl
fi

STEP="install requirements.txt"
log "$STEP"
"${PIP[@]}" install -q -r requirements.txt

# requirements.txt pins the core, [mm], [mim] and [tests]: the same as `pip install -e .[mm,mim,tests]`
# with the tested versions, so ropevit itself goes in without resolving its dependencies again.
STEP="install ropevit (editable)"
if [ -f pyproject.toml ]; then
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
fi

STEP="check the stack"
log "$STEP"
"$PY" -c "from mmcv.ops import nms, RoIAlign; import mmdet, mmseg, timm, torch, mmcv; print('[setup] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__, '| timm', timm.__version__)"
