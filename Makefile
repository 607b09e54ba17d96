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

# The main job on the built-in default: host CPU, MobileInst-TopFormer at 640, one core.
demo: install
	$(EDGESEG) export mobileinst_topformer --input-size 640 -o $(OUT)/mobileinst_topformer
	$(EDGESEG) bench $(OUT)/mobileinst_topformer --runs 30 --warmup 5 -o $(OUT)/mobileinst_topformer/bench.md

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT) .pytest_cache
