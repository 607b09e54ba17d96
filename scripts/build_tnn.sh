#!/usr/bin/env bash
# Build TNN's TNNTest on this host, to run edgeseg's TNN files with TNN's own kernels:
#   bash scripts/build_tnn.sh TNN_SOURCE_DIR arm|x86 [BUILD_DIR]      (--dry-run first: print only)
# then: python benchmarks/tnn_vs_onnxruntime.py MODEL.onnx --tnntest BUILD_DIR/test/TNNTest --device arm|x86 ...
#
# arm: TNN's ARM device. On an aarch64 host it gets NEON; on x86 TNN compiles the same ARM
#      device code into its C fallbacks (same NC4HW4 blob layouts, int8 layers and reformats),
#      which is how the ARM int8 networks were checked here (README, TNN). Its timings are not
#      a phone's.
# x86: TNN's x86 device (AVX2/FMA kernels).
# TNN_SOURCE_DIR is a checkout of github.com/Tencent/TNN (checked here at f0cb08129); it is
# not downloaded by this script. Needs cmake, ninja and a C++ compiler; about 600 files.
set -euo pipefail
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
if [ $# -lt 2 ] || [ ! -f "$1/CMakeLists.txt" ] || { [ "$2" != arm ] && [ "$2" != x86 ]; }; then
  echo "error: usage: bash scripts/build_tnn.sh [--dry-run] TNN_SOURCE_DIR arm|x86 [BUILD_DIR]" >&2
  echo "fix: TNN_SOURCE_DIR must be a TNN checkout (it holds CMakeLists.txt)" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
device=$2
build=${3:-$src/build-edgeseg-$device}
if [ "$device" = arm ]; then
  flags=(-DTNN_ARM_ENABLE=ON -DTNN_X86_ENABLE=OFF)
else
  flags=(-DTNN_ARM_ENABLE=OFF -DTNN_X86_ENABLE=ON)
fi
cmd=(cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTNN_CPU_ENABLE=ON "${flags[@]}"
     -DTNN_TEST_ENABLE=ON -DTNN_UNIT_TEST_ENABLE=OFF -DTNN_OPENMP_ENABLE=OFF -DTNN_ONNX2TNN_ENABLE=OFF)
echo "${cmd[*]}"
echo "ninja -C $build TNNTest"
if [ $dry = 1 ]; then exit 0; fi
for tool in cmake ninja; do
  command -v $tool >/dev/null || { echo "error: $tool not found" >&2; echo "fix: apt-get install cmake ninja-build" >&2; exit 2; }
done
"${cmd[@]}"
ninja -C "$build" TNNTest
echo "built $build/test/TNNTest"
