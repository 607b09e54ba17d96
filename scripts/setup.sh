#!/usr/bin/env bash
# Create (or update) the project's virtual environment.
#   scripts/setup.sh [VENV_DIR] [EXTRAS]      e.g. scripts/setup.sh .venv test,tflite
# torch is installed FIRST and pinned to 2.13.0: an open `torch` requirement (ours or a
# dependency's) would otherwise pull the newest CUDA build, several GB.
set -euo pipefail
VENV=${1:-.venv}
EXTRAS=${2:-test}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[${EXTRAS}]"
if [[ ",${EXTRAS}," == *",tflite,"* ]]; then
  # Their exact pins (numpy 1.26, onnx 1.19, protobuf 4.25, the full `tensorflow` wheel)
  # would break the rest of the stack; their real dependencies are in the tflite extra.
  $PIP install -q --no-deps "onnx2tf==1.29.24" "tf-keras==2.21.0"
fi
echo "edgeseg installed in $VENV (extras: $EXTRAS)"
