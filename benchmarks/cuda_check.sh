#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install what the CUDA backend needs (from wheels in WHEELS_DIR when
# given, else from the index), run the conformance kit against cuda:0 and the CUDA tests, then print
# benchmarks/cuda.py's JSON. Usage: WHEELS_DIR=/path/to/wheels bash benchmarks/cuda_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m venv .venv-cuda
PIP=(.venv-cuda/bin/pip install -q)
if [ -n "${WHEELS_DIR:-}" ]; then PIP+=(--no-index --find-links "$WHEELS_DIR"); fi
CUPY="${CUPY_PACKAGE:-cupy-cuda12x}"
"${PIP[@]}" -e ".[dev]" "$CUPY"
.venv-cuda/bin/python -m dsrt devices
.venv-cuda/bin/python -m pytest --pyargs dsrt.testing --dsrt-backend cuda -p no:cacheprovider -q
.venv-cuda/bin/python -m pytest tests/cuda -q -p no:cacheprovider
.venv-cuda/bin/python benchmarks/cuda.py --json
