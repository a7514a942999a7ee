#!/usr/bin/env bash
# Create .venv and install the project with its extras, ray excepted (CPU torch 2.13.0 where it
# is on disk; `pip install -e ".[cluster]"` adds ray for `sim.sweep --backend ray`).
# Usage: bash setup.sh            (idempotent; re-running only installs what is missing)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[llm,data,minilm,dask,test]"
echo "setup.sh: environment ready in .venv"
