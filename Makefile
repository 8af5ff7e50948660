# make run  : set up (when needed), then the main job
# make test : set up (when needed), then the tests
EMAE_VENV ?= $(HOME)/.cache/emae/venv
export EMAE_VENV
PY := $(EMAE_VENV)/bin/python

.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m emae pretrain --output-dir runs/fmnist-tiny/emae
	$(PY) -m emae eval knn --checkpoint runs/fmnist-tiny/emae/checkpoint.pth --output-dir runs/fmnist-tiny/emae/knn

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.run_all
