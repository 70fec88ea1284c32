# hvd_trainer — every target sets itself up on a fresh machine (make setup is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
NP ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-cluster bench bench-peers clean
BENCH_ARGS ?=

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

# hvd_trainer side by side with bare Horovod/PyTorch loops and (after `make bench-peers`) Lightning;
# writes benchmarks/results/bench.{json,md,png}. BENCH_ARGS=--quick: a smoke run of every contender (a few minutes).
bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# PyTorch Lightning for `make bench`, in benchmarks/.venv-peers (shares .venv's torch).
bench-peers: setup
	@bash scripts/bench_peers.sh

clean:
	rm -rf $(VENV) results .pytest_cache benchmarks/.venv-peers benchmarks/.data benchmarks/.work
