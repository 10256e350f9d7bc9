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
# Test workers: most tests are single-process, so two workers keep both cores busy. Tests that must not
# share a worker with others of their kind (the loopback Slurm cluster) carry an xdist_group mark.
TEST_WORKERS ?= 2

.PHONY: setup system-deps demo test test-fast clean-venv

# Debian packages for real DFT (GPAW builds against OpenMPI and libxc; PAW setups from gpaw-data) and
# for the one-node Slurm of the dispatch tests. Installed where apt-get runs as root; elsewhere the
# DFT and Slurm tests skip with the reason.
SYSTEM_PACKAGES := libopenmpi-dev openmpi-bin libxc-dev gpaw-data slurm-wlm munge

setup: $(STAMP)

system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null)) \
	  || echo "system-deps: apt-get could not install $(SYSTEM_PACKAGES); DFT and Slurm tests will skip"; \
	else echo "system-deps: not root or no apt-get; install $(SYSTEM_PACKAGES) yourself for GPAW and Slurm"; fi

# GPAW is built only where OpenMPI's compiler wrapper exists (after system-deps).
$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# deepmd-kit's MPICH wheel puts its own mpi.h in $(VENV)/include; GPAW must see OpenMPI's first, and a
	# cached wheel may have been built against the wrong one, hence --no-cache-dir.
	if command -v mpicc >/dev/null; then \
	  CFLAGS="$$(mpicc --showme:compile)" $(PY) -m pip install --quiet --no-cache-dir "gpaw>=25" && \
	  $(PY) -m pip install --quiet -e ".[test,dft]"; fi
	touch $(STAMP)

demo: setup
	$(PY) -m lfpo_al train $(ARGS)
	$(PY) -m lfpo_al analyze $(ARGS)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow and not dft and not slurm" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
