#!/usr/bin/env bash
# CI accuracy/latency gate: sweep the shipped checkpoint over a few precision plans and
# compare with the committed baseline. Exit 1 on a regression, 2 when the gate could not
# give a verdict (edgeseg regress's usage/configuration errors: no or invalid baseline,
# incomparable sweeps, a baseline plan not measured), anything else when a step failed.
#
#   scripts/ci-regress.sh                     # the gate, as .ci/run calls it
#   scripts/ci-regress.sh --update-baseline   # accept the current figures (commit the JSON)
#   scripts/ci-regress.sh --sweep-only        # just the sweep (benchmarks/sweep_variance.py)
#
# The settings below are part of the baseline: the gate refuses a result evaluated on
# other images, and a different calibration shows up as a note plus whatever AP it moves.
# Latency is compared as each plan's latency / FP32's from the same run (interleaved
# rounds on one pinned core; p10 by default, the least noisy on a shared machine), so the
# speed of the CI machine cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."

EDGESEG=${EDGESEG:-.venv/bin/edgeseg}
PYTHON=${PYTHON:-.venv/bin/python}
BASELINE=${BASELINE:-benchmarks/baselines/sweep_ci.json}
OUT=${CI_REGRESS_OUT:-out/ci-regress}
MODEL=${CI_REGRESS_MODEL:-mobileinst_topformer_synth}  # edgeseg/zoo/<model>.safetensors (or a checkpoint path)
PLANS='mixed;int8'                 # + FP32, which the sweep always measures as the reference
VAL=200                            # synthetic val images (seed 0): the split the checkpoint's AP is reported on
CALIB=32                           # calibration images, from the train split (never val)
RUNS=150                           # timed runs per plan, in 15 interleaved rounds of 10
REPEATS=15
AP_TOL=${AP_TOL:-1.0}              # AP points; see benchmarks/sweep_variance.py for the spread
LATENCY_TOL=${LATENCY_TOL:-0.15}   # relative growth of the latency ratio to FP32

mode=gate
extra=()
for arg in "$@"; do
  case "$arg" in
    --sweep-only) mode=sweep ;;
    --update-baseline) extra+=("--update-baseline") ;;
    *) echo "unknown argument: $arg (use --update-baseline or --sweep-only)" >&2; exit 2 ;;
  esac
done

sweep() {  # $1: output folder
  rm -rf "$1"
  "$EDGESEG" data synth -o "$1/shapes" --train "$CALIB" --val "$VAL" --videos 0 --val-videos 0 --seed 0 >/dev/null
  "$EDGESEG" sweep "$MODEL" --plans "$PLANS" \
    --calib "$1/shapes/coco/train" --calib-num "$CALIB" \
    --dataset "$1/shapes/coco/annotations/val.json" --images "$1/shapes/coco/val" \
    --runs "$RUNS" --repeats "$REPEATS" --warmup 10 \
    -o "$1/reports" --work-dir "$1/work"
}

gate() {  # $1: output folder; extra args go to edgeseg regress
  local dir=$1
  shift
  "$EDGESEG" regress "$dir/reports/sweep.json" --baseline "$BASELINE" \
    --ap-tol "$AP_TOL" --latency-tol "$LATENCY_TOL" --json "$dir/reports/regress.json" "$@"
}

sweep "$OUT"
if [ "$mode" = sweep ]; then
  exit 0
fi
if [ ${#extra[@]} -gt 0 ]; then
  gate "$OUT" "${extra[@]}"
  exit 0
fi
rc=0
gate "$OUT" || rc=$?
if [ "$rc" -ne 1 ]; then
  exit "$rc"  # passed, or no verdict (2): re-measuring cannot change a configuration problem
fi
# AP is deterministic on a machine, latency is not: a failure on latency ratios alone is
# confirmed by a second, independent measurement before it fails the build. A real
# regression fails both; a noisy moment rarely does twice.
latency_only=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_only_failure"])' "$OUT/reports/regress.json" 2>/dev/null || echo False)
if [ "$latency_only" != True ]; then
  exit 1
fi
echo "latency-only failure: re-measuring once to rule out a noisy machine" >&2
sweep "$OUT/confirm"
gate "$OUT/confirm"
