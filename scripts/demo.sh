#!/usr/bin/env bash
# The main job, run by `make demo`: the built-in digits example on NP ranks under horovodrun.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NP="${1:-2}"
# As root, Open MPI needs the first two; the third lets ranks yield a shared core while they wait.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
exec .venv/bin/horovodrun -np "$NP" -H "localhost:$NP" --disable-cache .venv/bin/python -m hvd_trainer
