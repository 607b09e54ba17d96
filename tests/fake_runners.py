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
