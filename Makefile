# bloodseg — `make help` lists the targets. Everything runs inside .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# torch/torchvision pinned to releases that pip on this platform finds locally; override if needed
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# make test: pytest-xdist workers; each runs one torch thread (tests/conftest.py)
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
# make demo: the main job on built-in synthetic data (CPU, minutes)
DEMO_DIR ?= experiments/demo
MODELS ?= unet,resunet,vgg11unet,vgg16unet,attunet
DEMO_ARGS ?=
# make reproduce: the study's experiments on the real dataset (GPU recommended)
DATA_DIR ?= data/BCCD Dataset with mask
EXPERIMENTS ?= unet_grayscale,unet_rgb,resunet_grayscale,resunet_grayscale_scheduler,vgg11unet,vgg16unet,attunet
EPOCHS ?= 100
TRAINER ?= default
LAUNCHER ?= basic
PROFILE ?= null
RUNS_DIR ?= experiments/runs/reproduce
FIGURES_DIR ?= experiments/figures
# the file whose <!-- demo:begin/end --> and <!-- results:begin/end --> sections make demo and
# make reproduce rewrite
README ?= docs/results.md
ARGS ?=
# make gpu-check: the prepared GPU-session check (python -m benchmarks.gpu_check --help)
GPU_CHECK_ARGS ?=
# make benchmark-real: bloodseg-cv (k-fold CV of the conf/experiment/bench/ recipes + Otsu
# baselines) on the real pairs of BENCH_DATA into BENCH_DIR; BENCH_ARGS: bloodseg-cv --help
BENCH_DATA ?= ../shared/data/bbbc041seg-mini
BENCH_DIR ?= experiments/benchmark-real
BENCH_ARGS ?= --readme docs/results.md
# the second human reference (BBBC041's own boxes of the same images): box columns + a masks row
BENCH_BOXES ?= ../shared/data/bbbc041-boxes/boxes.csv
# make weights: retrain the shipped model (bloodseg/weights/count_real.pt) on bbbc041seg-mini
WEIGHTS_DATA ?= ../shared/data/bbbc041seg-mini
WEIGHTS_DIR ?= experiments/weights
WEIGHTS_OUT ?= bloodseg/weights/count_real.pt
WEIGHTS_ARGS ?=

COUNT_INPUT ?= ../shared/data/bbbc041seg-mini/test/original
COUNT_DIR ?= experiments/counts

.PHONY: count help install test test-fast lint demo reproduce gpu-check benchmark-real benchmark-synthetic weights clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, from the pinned spec, so the CPU/CUDA build pip finds locally is the one used
	$(PY) -m pip install --quiet $(TORCH_SPEC) || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e '.[dev,optuna,export]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install bloodseg with its dev tools and Optuna

test: install ## run the test suite (installs first), one worker per core (TEST_WORKERS=2)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: install ## tests without the slow pipeline ones
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: install ## ruff
	$(BIN)/ruff check bloodseg tests benchmarks train.py

demo: install ## the main job offline: synthetic smears -> 5 networks -> watershed counts -> figures + docs/results.md (CPU, <15 min)
	rm -rf $(DEMO_DIR)/runs
	$(PY) train.py -m model=$(MODELS) data=synthetic profile=demo hydra.sweep.dir=$(DEMO_DIR)/runs $(DEMO_ARGS)
	$(BIN)/bloodseg-report $(DEMO_DIR)/runs --out $(DEMO_DIR)/figures --readme $(README) --section demo --baselines

reproduce: install ## the study's experiments on real BBBC041Seg (DATA_DIR, EPOCHS, TRAINER, LAUNCHER), figures + docs/results.md
	@if [ ! -d "$(DATA_DIR)/train" ]; then \
	  echo "error: no dataset at '$(DATA_DIR)' (expected train/ and test/ inside)." >&2; \
	  echo "Get it with:  $(BIN)/bloodseg-data download --out data/" >&2; \
	  echo "  (offline: download the zip from https://www.kaggle.com/datasets/jeetblahiri/bccd-dataset-with-mask" >&2; \
	  echo "   and run  $(BIN)/bloodseg-data download --zip archive.zip --out data/)" >&2; \
	  echo "or point DATA_DIR at it:  make reproduce DATA_DIR=/path/to/BCCD\ Dataset\ with\ mask" >&2; \
	  exit 2; fi
	rm -rf $(RUNS_DIR)
	$(PY) train.py -m experiment=$(EXPERIMENTS) data=bbbc041seg "data.root='$$(cd "$(DATA_DIR)" && pwd)'" \
	  trainer=$(TRAINER) hydra/launcher=$(LAUNCHER) trainer.max_epochs=$(EPOCHS) profile=$(PROFILE) \
	  hydra.sweep.dir=$(RUNS_DIR) $(ARGS)
	$(BIN)/bloodseg-report $(RUNS_DIR) --out $(FIGURES_DIR) --readme $(README) --section results

count: install ## count cells with the shipped model, no training (COUNT_INPUT=images -> COUNT_DIR)
	@if [ ! -e "$(COUNT_INPUT)" ]; then \
	  echo "error: no images at '$(COUNT_INPUT)'; pass COUNT_INPUT=<image or folder>" >&2; exit 2; fi
	$(BIN)/bloodseg-predict weights=count_real "input='$(COUNT_INPUT)'" "output='$(COUNT_DIR)'" overwrite=true

gpu-check: install ## one GPU session's check (<= 8 min, one H100): step TFLOP/s, Kaggle-sized epoch, CLIs -> $OUT
	$(PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

benchmark-real: install ## k-fold CV (bloodseg-cv) on the real pairs in ../shared/data (conf/experiment/bench vs Otsu) -> experiments/benchmark-real, docs/results.md (CPU: ~2 h)
	$(BIN)/bloodseg-cv --root "$(BENCH_DATA)" --out "$(BENCH_DIR)" \
		$(if $(wildcard $(BENCH_BOXES)),--boxes "$(BENCH_BOXES)") $(BENCH_ARGS)

benchmark-synthetic: install ## targets vs scikit-image's watershed on synthetic smears, both styles -> experiments/benchmark-synthetic (CPU: ~15 min)
	$(PY) -m benchmarks.synthetic_targets

weights: install ## retrain the shipped model: count_real on all 40 pairs of bbbc041seg-mini -> bloodseg/weights/count_real.pt (CPU: ~15 min)
	@if [ ! -d "$(WEIGHTS_DATA)/train/original" ] || [ ! -d "$(WEIGHTS_DATA)/test/original" ]; then \
	  echo "error: no bbbc041seg-mini at '$(WEIGHTS_DATA)' (expected train/ and test/, each with original/ and mask/)." >&2; \
	  echo "point WEIGHTS_DATA at it:  make weights WEIGHTS_DATA=/path/to/bbbc041seg-mini" >&2; \
	  exit 2; fi
	@# a Kaggle-layout folder of links, rebuilt each time at one path (the run's config hash and
	@# provenance name it): all 40 pairs in train/, the 10 test pairs also in test/ for the test stage
	rm -rf "$(WEIGHTS_DIR)/data" "$(WEIGHTS_DIR)/count_real"
	src="$$(cd "$(WEIGHTS_DATA)" && pwd)" && for kind in original mask; do \
	  mkdir -p "$(WEIGHTS_DIR)"/data/{train,test}/$$kind && \
	  ln -s "$$src"/{train,test}/$$kind/* "$(WEIGHTS_DIR)/data/train/$$kind/" && \
	  ln -s "$$src"/test/$$kind/* "$(WEIGHTS_DIR)/data/test/$$kind/" || exit 1; done
	$(PY) train.py experiment=count_real "data.root='$(WEIGHTS_DIR)/data'" logger=csv \
	  "hydra.run.dir='$(WEIGHTS_DIR)/count_real'" $(WEIGHTS_ARGS)
	$(BIN)/bloodseg-export "ckpt_path='$(WEIGHTS_DIR)/count_real/checkpoints/best.ckpt'" format=bundle \
	  "output='$(WEIGHTS_OUT)'" overwrite=true "hydra.run.dir='$(WEIGHTS_DIR)/export'"

clean: ## remove the venv, caches and run outputs (not data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info experiments/runs outputs multirun wandb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
