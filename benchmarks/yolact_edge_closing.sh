#!/usr/bin/env bash
# YolactEdge's closing figures (issue 14) on the shipped checkpoint, most important first;
# a failing step is reported and the next one still runs. Every step is one command of the
# README's YolactEdge section, so any row can be re-run alone.
#
#   bash benchmarks/yolact_edge_closing.sh [SHAPES_DIR [VIS_DIR [REPORTS_DIR]]]
#
# SHAPES_DIR: `edgeseg data synth -o data/shapes8k --train 8000 --val 200 --videos 0 --val-videos 0 --seed 0`
# VIS_DIR:    `edgeseg data synth -o data/vis --train 0 --val 0 --videos 600 --val-videos 10 --frames 24 --seed 0`
# Steps: 16-plan sweep on ONNX Runtime (Table I), tracking at key intervals 1/3/5 (FP32 and the
# paper's plan), the calibration-size ablation (Table VIa), every plan through TNN, the
# component breakdown (Table II) and keyframe vs non-keyframe cost, the 16-plan sweep on TFLite.
set -u
SHAPES=${1:-data/shapes8k}
VIS=${2:-data/vis}
R=${3:-reports}
M=yolact_edge_mobilenetv2_synth
D=$SHAPES/coco
V=$VIS/ytvis
A=out/ye_closing
E=${EDGESEG:-edgeseg}
P=${PYTHON:-python}
# One BLAS thread: on a busy machine OpenBLAS's spinning workers cost the NumPy decoding 3x its CPU time.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$R"
step() { echo "=== $(date +%T) $*"; }
run() { "$@" || echo "!!! FAILED ($?): $*"; }

step export; rm -rf "$A"; run $E export $M --weights zoo -o $A
step "sweep onnxruntime (Table I)"
run $E sweep $M --calib $D/train --calib-num 100 --dataset $D/annotations/val.json --images $D/val \
    --runs 50 --warmup 10 --overwrite -o "$R/ye_sweep_onnxruntime"
step "track FP32, key interval 1/3/5"
run $E track --dataset $V/annotations/val.json --videos $V/JPEGImages --artifact $A --key-interval 1,3,5 \
    -o "$R/ye_track.md"
step "track at the paper's plan"
run $E calibrate $A/$M.onnx --images $D/train --num 100
run $E quantize $A/$M.onnx --plan yolact_edge --calib $A/$M.kl.calib.json
run $E track --dataset $V/annotations/val.json --videos $V/JPEGImages --artifact $A/$M.yolact_edge.onnx \
    --key-interval 1,3,5 -o "$R/ye_track_yolact_edge_plan.md"
step "calibration ablation (Table VIa)"
run $P benchmarks/yolact_edge_calibration.py --weights zoo --calib $D/train --dataset $D/annotations/val.json \
    --images $D/val -o "$R/ye_calibration.json"
step "every plan through TNN"
run $P benchmarks/tnn_plans.py $A --calib $A/$M.kl.calib.json -o "$R/ye_tnn_plans.json"
step "component breakdown (Table II) and video cost"
run $P benchmarks/component_breakdown.py --models $M --weights zoo --runs 30 --artifact $A/$M.yolact_edge.onnx \
    -o "$R/ye_breakdown_synth.json"
run $P benchmarks/yolact_edge_video_cost.py --models $M --weights zoo --rounds 30 -o "$R/ye_video_cost_synth.json"
step "sweep tflite (Table I)"
run $E sweep $M --backend tflite --calib $D/train --calib-num 100 --dataset $D/annotations/val.json --images $D/val \
    --runs 50 --warmup 10 --overwrite -o "$R/ye_sweep_tflite"
step done
