# make run  : set up (when needed), then the main job
# make test : set up (when needed), then the tests
EMAE_VENV ?= $(HOME)/.cache/emae/venv
export EMAE_VENV
PY := $(EMAE_VENV)/bin/python

.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

# MAE and EMAE on Fashion-MNIST: pre-train, export, every evaluation, report (runs/pipeline/report)
run: setup
	$(PY) -m emae pipeline --root runs/pipeline

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.run_all
