# hvd_trainer — every target sets itself up on a fresh machine (make setup is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
NP ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-cluster bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh $(NP)

# The whole suite: unit tests, real horovodrun/mpirun jobs, and the cluster tests (markers
# slurm, multihost, docker), which skip with a reason where the machine cannot run them.
test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Everything except the cluster tests.
test-fast: setup
	$(PY) -m pytest tests -m "not slurm and not multihost and not docker" $(PYTEST_ARGS)

test-cluster: setup
	$(PY) -m pytest tests -m "slurm or multihost or docker" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) results .pytest_cache
