# Everything installs into .venv/ in the repository root; targets are idempotent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Keep deepmd/torch to the cores we have; 1 intra-op thread is fastest on 2 busy cores.
export OMP_NUM_THREADS ?= 1
export DP_INTRA_OP_PARALLELISM_THREADS ?= 1
export DP_INTER_OP_PARALLELISM_THREADS ?= 1
export WANDB_MODE ?= offline

.PHONY: setup demo test test-fast clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: setup
	$(PY) -m lfpo_al train $(ARGS)
	$(PY) -m lfpo_al analyze $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow and not dft and not slurm" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
