#!/usr/bin/env bash
# The main job, run by `make demo`: the built-in digits example on NP ranks, into ./results.
#
# Launched with plain mpirun rather than horovodrun: horovodrun's MPI mode always adds Open MPI's
# --tag-output (and its Gloo mode its own [rank] tags), which puts `[1,0]<stderr>:` before every
# line. Without tags the console reads as rank 0 writes it (the other ranks print warnings only).
# Horovod then runs on its MPI controller, as it does under horovodrun's MPI mode.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HVD_TRAINER_VENV:-$REPO/.venv}"
NP="${1:-2}"
# As root, Open MPI needs the first two; the third lets ranks yield a shared core while they wait.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
# More ranks than cores is fine for a demo (--oversubscribe), and no rank is pinned to one core. The
# ranks run on this host, so they inherit this environment without -x.
exec mpirun -np "$NP" --oversubscribe --bind-to none "$VENV/bin/python" -m hvd_trainer
