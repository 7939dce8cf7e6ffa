#!/usr/bin/env bash
# The runtime proves itself without torch: a venv with the base install only (pip install -e .), then the tests
# marked `runtime`. An import of torch on the runtime path fails here (torch is not installed).
#   bash scripts/runtime_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-runtime/bin/python ]; then
  python3 -m venv .venv-runtime
fi
.venv-runtime/bin/pip install -q -e . "pytest>=8"
if .venv-runtime/bin/python -c "import torch" 2>/dev/null; then
  echo "runtime_check: torch is installed in the base install; refusing" >&2
  exit 1
fi
.venv-runtime/bin/python -m pytest -q -m runtime tests/test_runtime_lean.py tests/test_decode.py
