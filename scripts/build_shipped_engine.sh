#!/usr/bin/env bash
# Rebuild weights/crnn_ort_int8 (the ONNX Runtime engine shipped beside weights/crnn.pt, used without torch).
# Run after every new weights/crnn.pt: a test checks that the engine's source checksum is the weights' sha256.
#   bash scripts/build_shipped_engine.sh
# int8: static QDQ convolutions + float LSTMs stored fp16 (--compact-lstm: batch-invariant, unlike the dynamic
# int8 LSTMs of --int8-lstm), calibrated on rendered words (seed 31337,
# never a test set), the default budget (<= 0.5 points lost on 512 labelled probe words).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$py -m deployzoo.cli synth --out "$tmp/calib" --count 1024 --seed 31337 --workers 2
$py -m deployzoo.cli build crnn --precision int8 --compact-lstm --portable --checkpoint weights/crnn.pt --calib-data "$tmp/calib" \
    --calib-count 256 --probe-count 512 --threads 2 --out "$tmp/engine"
rm -rf weights/crnn_ort_int8.new
cp -r "$tmp/engine" weights/crnn_ort_int8.new
rm -rf weights/crnn_ort_int8
mv weights/crnn_ort_int8.new weights/crnn_ort_int8
du -sh weights/crnn_ort_int8
