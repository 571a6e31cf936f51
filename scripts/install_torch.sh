#!/usr/bin/env bash
# Install the torch build that fits this machine into the given Python environment.
#
#   no NVIDIA GPU            -> the CPU build (small; never the multi-GB CUDA wheels)
#   NVIDIA GPU (nvidia-smi)  -> the CUDA build from PyPI
#   WORKBENCH_TORCH_INDEX=URL overrides both, e.g.
#       WORKBENCH_TORCH_INDEX=https://download.pytorch.org/whl/cu126 make setup
set -euo pipefail
PY=${1:?usage: install_torch.sh PYTHON}
TORCH_VERSION=$(grep -oE '"torch==[0-9.]+"' pyproject.toml | grep -oE '[0-9.]+[0-9]')
if "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  exit 0
fi
if [ -n "${WORKBENCH_TORCH_INDEX:-}" ]; then
  "$PY" -m pip install "torch==$TORCH_VERSION" --index-url "$WORKBENCH_TORCH_INDEX"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install "torch==$TORCH_VERSION"
elif "$PY" -m pip download --no-deps --no-index --find-links "${PIP_FIND_LINKS:-/nonexistent}" \
       -d "$(mktemp -d)" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
  # A local CPU wheel is available (find-links): use it.
  "$PY" -m pip install "torch==$TORCH_VERSION"
else
  "$PY" -m pip install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
