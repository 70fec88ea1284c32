#!/usr/bin/env bash
# Put every wheel the image needs into one folder, so `docker build` runs with no network
# (--build-arg OFFLINE=1): the torch, Horovod and mpi4py wheels this machine already has
# ('make setup' builds and caches Horovod and mpi4py), plus the other dependencies at the
# versions installed in the repository's virtualenv (downloaded once from PyPI, then cached).
#
#   docker/stage_wheels.sh [OUT]        (default OUT: docker/wheels)
#
# Knobs: HVD_TORCH_WHEEL (a torch wheel file; default: the first torch-*.whl in /opt/wheels or
# $PIP_FIND_LINKS), HVD_TRAINER_CACHE (default ~/.cache/hvd_trainer), HVD_TRAINER_VENV.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/docker/wheels}"
CACHE="${HVD_TRAINER_CACHE:-$HOME/.cache/hvd_trainer}"
VENV="${HVD_TRAINER_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
DEPS="$CACHE/docker/wheels"

say() { printf '[wheels] %s\n' "$*"; }
die() { printf '\n[wheels] ERROR: %s\n\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || die "No virtualenv at $VENV; run 'make setup' first (it builds the Horovod and mpi4py wheels this script copies)."
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
[ "$PY_TAG" = cp311 ] || say "Warning: the venv is $PY_TAG but the image's Debian 12 Python is cp311; the wheels may not install."
mkdir -p "$OUT" "$DEPS"

pick() { for f in "$@"; do [ -f "$f" ] && { printf '%s' "$f"; return 0; }; done; return 1; }

torch_wheel="${HVD_TORCH_WHEEL:-}"
if [ -z "$torch_wheel" ]; then
  dirs="/opt/wheels ${PIP_FIND_LINKS:-}"
  for d in $dirs; do
    torch_wheel=$(pick "$d"/torch-"$TORCH_VERSION"-"$PY_TAG"-*.whl) && break || torch_wheel=""
  done
fi
[ -n "$torch_wheel" ] || die "No torch $TORCH_VERSION wheel for $PY_TAG was found (looked in /opt/wheels and \$PIP_FIND_LINKS). Set HVD_TORCH_WHEEL to one, or build the image with network instead."
hvd_wheel=$(pick "$CACHE"/horovod-*-torch-"$TORCH_VERSION"-"$PY_TAG"/horovod-*.whl) \
  || die "No Horovod wheel built against torch $TORCH_VERSION in $CACHE; run 'make setup' (it builds and caches one)."
mpi_wheel=$(pick "$CACHE"/mpi4py-"$PY_TAG"/mpi4py-*.whl) || die "No mpi4py wheel in $CACHE/mpi4py-$PY_TAG; run 'make setup'."

# The rest: what the venv has installed, minus what is copied above and the test tools.
reqs=$("$PY" -m pip freeze --disable-pip-version-check 2>/dev/null \
  | grep -E '^[A-Za-z0-9_.-]+==' \
  | grep -viE '^(torch|horovod|mpi4py|hvd[_-]trainer|pytest|pytest-timeout|iniconfig|pluggy|pygments)==' || true)
reqs=$(printf '%s\nsetuptools==%s\nwheel\n' "$reqs" "$("$PY" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null || echo 68.2.2)" | sed '/^$/d' | sort)
if [ -f "$DEPS/requirements.txt" ] && [ "$(cat "$DEPS/requirements.txt")" = "$reqs" ]; then
  say "Dependency wheels already cached in $DEPS."
else
  say "Downloading $(printf '%s\n' "$reqs" | wc -l) dependency wheels for cp311/manylinux from PyPI (once)."
  printf '%s\n' "$reqs" > "$DEPS/requirements.in"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DEPS" -r "$DEPS/requirements.in"
  printf '%s\n' "$reqs" > "$DEPS/requirements.txt"
fi

# Hard links where possible: the folder becomes part of a build context, not a second copy.
for f in "$torch_wheel" "$hvd_wheel" "$mpi_wheel" "$DEPS"/*.whl; do
  ln -f "$f" "$OUT/" 2>/dev/null || cp -f "$f" "$OUT/"
done
say "$(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1)); build with --build-arg OFFLINE=1."
