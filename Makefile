# Fresh machine:  `make demo` (install + main job)  |  `make test` (install + tests)
VENV ?= .venv
PY := $(VENV)/bin/python
EDGESEG := $(VENV)/bin/edgeseg
EXTRAS ?= test,tflite
OUT ?= out

.PHONY: install demo test clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV) $(EXTRAS)
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# The main job on the built-in default (host CPU, the shipped checkpoint, synthetic data):
# data -> export -> one KL calibration -> every fp16/int8 plan: AP and one-core latency ->
# reports/ (sweep.md, sweep.json, sweep_pareto.png); then the paper-size model's one-core
# latency report. A few minutes on 2 cores.
DEMO_EXTRAS ?= eval
REPORTS ?= reports
DEMO_MODEL := mobileinst_topformer_synth
demo:
	$(MAKE) install EXTRAS=$(DEMO_EXTRAS)
	$(EDGESEG) data synth -o $(OUT)/shapes --train 100 --val 200 --videos 0 --val-videos 0 --seed 0 --overwrite
	$(EDGESEG) export $(DEMO_MODEL) --weights zoo -o $(OUT)/$(DEMO_MODEL)
	$(EDGESEG) calibrate $(OUT)/$(DEMO_MODEL)/$(DEMO_MODEL).onnx --images $(OUT)/shapes/coco/train --num 100 \
		-o $(OUT)/$(DEMO_MODEL)/calib.kl.json
	$(EDGESEG) sweep $(OUT)/$(DEMO_MODEL) --calib $(OUT)/$(DEMO_MODEL)/calib.kl.json \
		--dataset $(OUT)/shapes/coco/annotations/val.json --images $(OUT)/shapes/coco/val \
		--max-ap-drop 1.0 -o $(REPORTS) --work-dir $(OUT)/sweep-work
	# The paper's setting: MobileInst-TopFormer at 640x640 (random weights), one pinned core.
	$(EDGESEG) export mobileinst_topformer --input-size 640 -o $(OUT)/mobileinst_topformer
	$(EDGESEG) bench $(OUT)/mobileinst_topformer --runs 30 --warmup 5 -o $(REPORTS)/mobileinst_topformer_640_bench.md

# The tests drive the real adb client and a private sshd: the same script CI used to call
# installs them (only what is missing), so `make test` alone is the whole set-up.
test: install
	bash scripts/ci-system-deps.sh
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT) $(REPORTS) .pytest_cache
