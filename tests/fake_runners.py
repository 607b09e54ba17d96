"""Stand-ins for on-device benchmark binaries, for transport tests on this machine.

They are POSIX shell scripts that accept the real tools' flags and print the real
tools' output *format* (so the real parsers read them), with made-up timings: these
tests check that commands, pinning, files and parsing flow end to end through the real
adb / ssh clients, not how fast anything is. Each call appends its arguments and the
CPU affinity it actually ran with to ``<script>.calls`` beside the pushed script.
Set FAKE_RUNNER_SLEEP (seconds) to make a run last long enough to pull the plug.
"""

from __future__ import annotations

from pathlib import Path

_LOG_CALL = r'''
log="$0.calls"
{ printf 'ARGS'; for a in "$@"; do printf ' [%s]' "$a"; done; echo
  grep Cpus_allowed_list /proc/self/status; } >> "$log"
sleep "${FAKE_RUNNER_SLEEP:-0}"
'''

BENCHMARK_MODEL = r'''#!/bin/sh
# fake TFLite benchmark_model (test stand-in; prints the real tool's output format)
runs=50; warm=1; graph=""
for a in "$@"; do
  case "$a" in
    --num_runs=*) runs=${a#*=} ;;
    --warmup_runs=*) warm=${a#*=} ;;
    --graph=*) graph=${a#*=} ;;
  esac
done
[ -f "$graph" ] || { echo "ERROR: Could not open '$graph'." >&2; exit 1; }
''' + _LOG_CALL + r'''
echo "INFO: The input model file size (MB): 0.001"
echo "INFO: Running benchmark for at least $warm iterations and at least 0 seconds"
echo "INFO: count=$warm first=20000 curr=15000 min=14000 max=20000 avg=15500 std=1000"
echo ""
echo "INFO: Running benchmark for at least $runs iterations and at least 0 seconds"
echo "INFO: count=$runs first=15100 curr=14900 min=14500 max=15500 avg=1.5e+04 std=250"
echo ""
echo "INFO: Inference timings in us: Init: 1000, First inference: 20000, Warmup (avg): 15500, Inference (avg): 15000"
echo "INFO: Memory footprint delta from the start of the tool (MB): init=1.5 overall=3.25"
'''

# Android TNNTest logs through __android_log_print only: the fake writes its result line
# to a log file that the fake `logcat` tool prints (with logcat's own line prefix).
TNNTEST = r'''#!/bin/sh
# fake TNNTest (test stand-in): result goes to the fake logcat buffer, not stdout
''' + _LOG_CALL + r'''
model=""; ic=1; wc=0
while [ $# -gt 0 ]; do
  case "$1" in
    -mp) model=$2; shift ;;
    -ic) ic=$2; shift ;;
    -wc) wc=$2; shift ;;
  esac
  shift
done
[ -f "$model" ] && [ -f "${model%.tnnproto}.tnnmodel" ] || { echo "load model failed" >&2; exit 2; }
echo "$(date '+%m-%d %H:%M:%S').000 27062 27062 I tnn : void tnn::test::Timer::Print() [File test/timer.cc][Line 60] $(basename "$model") - ARM TNN Benchmark time cost: min = 31.929 ms | max = 33.771 ms | avg = 32.238 ms" >> "$FAKE_LOGCAT"
'''

FAKE_LOGCAT = r'''#!/bin/sh
# fake logcat: print the buffer the fake runners wrote to
cat "$FAKE_LOGCAT" 2>/dev/null
'''

GETPROP = r'''#!/bin/sh
# fake getprop with a Snapdragon 778G phone's properties
case "$1" in
  ro.product.manufacturer) echo samsung ;;
  ro.product.model) echo SM-A536B ;;
  ro.soc.manufacturer) echo QTI ;;
  ro.soc.model) echo SM7325 ;;
  ro.build.version.release) echo 13 ;;
  *) echo "" ;;
esac
'''

DUMPSYS = r'''#!/bin/sh
# fake dumpsys thermalservice
[ "$1" = thermalservice ] || exit 1
echo "Thermal Status: 0"
echo "Current temperatures from HAL:"
printf '\tTemperature{mValue=38.5, mType=0, mName=cpu-1-3-usr, mStatus=0}\n'
printf '\tTemperature{mValue=31.0, mType=3, mName=skin, mStatus=0}\n'
echo "Current cooling devices from HAL:"
'''

PHONE_TOOLS = {"getprop": GETPROP, "dumpsys": DUMPSYS, "logcat": FAKE_LOGCAT}


def write_runner(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(script)
    path.chmod(0o755)
    return path


def calls(root: Path, name: str) -> list[str]:
    """Every logged call line of the pushed runner ``name`` anywhere under ``root``."""
    out: list[str] = []
    for log in sorted(root.rglob(f"{name}.calls")):
        out += log.read_text().splitlines()
    return out


# --------------------------------------------------------------------------- Jetson stand-ins
TRTEXEC = r'''#!/bin/sh
# fake trtexec (test stand-in): the output format of the TensorRT in FAKE_TRT_VERSION (a
# TensorRT version code, default 8502 = 8.5.2); latency of run i is i ms. Like the real tools,
# 8.x rejects --stronglyTyped and TensorRT 11 rejects the weak-typing flags it removed.
ver=${FAKE_TRT_VERSION:-8502}
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v$ver] # trtexec $*"
onnx=""; engine=""; load=""; iters=10; times=""; calib=""; prof=""; layers=""
for a in "$@"; do
  case "$a" in
    --onnx=*) onnx=${a#*=} ;;
    --saveEngine=*) engine=${a#*=} ;;
    --loadEngine=*) load=${a#*=} ;;
    --iterations=*) iters=${a#*=} ;;
    --exportTimes=*) times=${a#*=} ;;
    --exportProfile=*) prof=${a#*=} ;;
    --exportLayerInfo=*) layers=${a#*=} ;;
    --calib=*) calib=${a#*=} ;;
    --help) exit 0 ;;
  esac
  case "$a" in
    --stronglyTyped) [ "$ver" -ge 100000 ] || { echo "[E] Unknown option: --stronglyTyped"; exit 1; } ;;
    --int8|--fp16|--calib=*|--precisionConstraints=*|--layerPrecisions=*)
      [ "$ver" -lt 110000 ] || { echo "[E] Unknown option: $a"; exit 1; } ;;
  esac
done
''' + _LOG_CALL + r'''
if [ -n "$onnx" ]; then
  [ -f "$onnx" ] || { echo "[E] Could not open $onnx"; echo "&&&& FAILED TensorRT.trtexec [TensorRT v$ver] # trtexec"; exit 1; }
  [ -z "$calib" ] || echo "CALIB_HEADER $(head -n 1 "$calib")" >> "$log"
  echo "engine built from $onnx" > "$engine"
  echo "&&&& PASSED TensorRT.trtexec [TensorRT v$ver] # trtexec"
  exit 0
fi
[ -f "$load" ] || { echo "[E] Error opening engine file: $load"; exit 1; }
if [ -n "$prof" ]; then
  if [ -n "$FAKE_TRT_PROFILE" ]; then cp "$FAKE_TRT_PROFILE" "$prof"; else
    printf '[\n  { "count" : %d }\n, { "name" : "layer0", "timeMs" : 1.0, "averageMs" : 0.1, "medianMs" : 0.1, "percentage" : 100 }\n]\n' "$iters" > "$prof"; fi
  if [ -n "$layers" ]; then
    if [ -n "$FAKE_TRT_LAYER_INFO" ]; then cp "$FAKE_TRT_LAYER_INFO" "$layers"; else
      printf '{"Layers": ["layer0"],\n"Bindings": []}\n' > "$layers"; fi
  fi
  echo "&&&& PASSED TensorRT.trtexec [TensorRT v$ver] # trtexec"
  exit 0
fi
{
  printf '[\n  { "count" : %d }' "$iters"
  i=1
  while [ "$i" -le "$iters" ]; do
    printf ',\n  { "startInMs" : %d.0, "endInMs" : %d.1, "startComputeMs" : %d.1, "endComputeMs" : %d.9, "startOutMs" : %d.9, "endOutMs" : %d.95, "inMs" : 0.1, "computeMs" : 0.8, "outMs" : 0.05, "latencyMs" : %d.0, "endToEndMs" : %d.0 }' $i $i $i $i $i $i $i $i
    i=$((i + 1))
  done
  printf '\n]\n'
} > "$times"
echo "[11/21/2025-10:00:00] [I] Timing trace has $iters queries over 0.5 s"
echo "[11/21/2025-10:00:00] [I] === Performance summary ==="
echo "[11/21/2025-10:00:00] [I] Throughput: 400.5 qps"
echo "[11/21/2025-10:00:00] [I] Latency: min = 1 ms, max = $iters ms, mean = 5.5 ms, median = 5.5 ms, percentile(99%) = $iters ms"
echo "[11/21/2025-10:00:00] [I] GPU Compute Time: min = 0.8 ms, max = 0.8 ms, mean = 0.8 ms, median = 0.8 ms, percentile(99%) = 0.8 ms"
echo "&&&& PASSED TensorRT.trtexec [TensorRT v$ver] # trtexec"
'''

TEGRASTATS = r'''#!/bin/sh
# fake tegrastats (test stand-in): an AGX Xavier-style line every 0.2 s until killed
while :; do
  echo "RAM 3000/15692MB (lfb 3x2MB) SWAP 0/8192MB (cached 0MB) CPU [5%@2265,4%@2265,off,off,1%@2265,0%@2265,0%@2265,0%@2265] EMC_FREQ 3%@2133 GR3D_FREQ 45%@1377 AO@30C GPU@41.5C CPU@38C GPU 4630/4630 CPU 618/618 SOC 2936/2936"
  sleep 0.2
done
'''

NVPMODEL = r'''#!/bin/sh
printf 'NV Power Mode: MAXN\n0\n'
'''

SUDO = r'''#!/bin/sh
# fake passwordless sudo: drop -n and run the command
[ "$1" = "-n" ] && shift
exec "$@"
'''

JETSON_CLOCKS = r'''#!/bin/sh
echo "SOC family:tegra194  Machine:Jetson-AGX"
echo "cpu0: Online=1 Governor=schedutil MinFreq=2265600 MaxFreq=2265600 CurrentFreq=2265600"
echo "GPU MinFreq=1377000000 MaxFreq=1377000000 CurrentFreq=1377000000"
'''

NV_TEGRA_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"

JETSON_TOOLS = {"tegrastats": TEGRASTATS, "nvpmodel": NVPMODEL, "sudo": SUDO, "jetson_clocks": JETSON_CLOCKS}
