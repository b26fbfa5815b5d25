# bloodseg — `make help` lists the targets. Everything runs inside .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# torch/torchvision pinned to releases that pip on this platform finds locally; override if needed
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, from the pinned spec, so the CPU/CUDA build pip finds locally is the one used
	$(PY) -m pip install --quiet $(TORCH_SPEC) || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install bloodseg with its dev tools

test: install ## run the test suite (installs first)
	$(BIN)/pytest -q

test-fast: install ## tests without the slow pipeline ones
	$(BIN)/pytest -q -m "not slow"

lint: install ## ruff
	$(BIN)/ruff check bloodseg tests benchmarks train.py

clean: ## remove the venv, caches and run outputs (not data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info experiments/runs outputs multirun wandb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
