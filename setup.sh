#!/usr/bin/env bash
# One-command set-up on a fresh Debian machine: system fonts for the synthetic renderer, a virtual environment
# with deployzoo installed (CPU torch 2.13.0, no CUDA packages), then the main job unless --no-run is given.
#
#   bash setup.sh            # install, then run the CRNN flow (deployzoo run crnn)
#   bash setup.sh --no-run   # install only (CI)
set -euo pipefail
cd "$(dirname "$0")"

run=1
[ "${1:-}" = "--no-run" ] && run=0

bash scripts/install_fonts.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch first and pinned, so no dependency can pull another build (or CUDA packages) in.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[all]"
if .venv/bin/pip list 2>/dev/null | grep -qiE '^nvidia-|^triton '; then
  echo "setup: CUDA packages were pulled into .venv; refusing to continue" >&2
  exit 1
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

if [ "$run" = 1 ]; then
  .venv/bin/deployzoo run crnn --out runs/crnn_flow
fi
