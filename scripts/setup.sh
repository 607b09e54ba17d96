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
echo "edgeseg installed in $VENV (extras: $EXTRAS)"
