#!/usr/bin/env bash
# Build-time installer of the hvd_trainer image (run by docker/Dockerfile; not for hosts).
#
#   install.sh system    the system packages the image runs with (Python, OpenMPI, OpenSSH)
#   install.sh deps      (build stage) those plus compilers where needed, the venv with torch,
#                        Horovod (Gloo + MPI), mpi4py and the Python dependencies of hvd_trainer
#   install.sh package   hvd_trainer itself (its source is copied in after the deps, so editing
#                        the code rebuilds only this last step)
#
# Wheels found in $WHEELS (docker/wheels/ in the build context) are used first. With OFFLINE=1
# nothing is downloaded: every package must be in the base image or in $WHEELS
# (docker/stage_wheels.sh prepares such a set). Without wheels, torch comes from PyTorch's CPU
# index and Horovod is built here exactly as scripts/setup.sh builds it.
set -euo pipefail

STEP="${1:?usage: install.sh system|deps|package}"
WHEELS="${WHEELS:-/opt/hvd_trainer/wheels}"
SRC="${SRC:-/opt/hvd_trainer/src}"
VENV="${VIRTUAL_ENV:-/opt/hvd_trainer/venv}"
OFFLINE="${OFFLINE:-0}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
HOROVOD_VERSION="${HOROVOD_VERSION:-0.28.1}"

say() { printf '[image] %s\n' "$*"; }
die() { printf '\n[image] ERROR: %s\n\n' "$*" >&2; exit 1; }
have_wheel() { ls "$WHEELS"/"$1"-*.whl >/dev/null 2>&1; }

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q)
FIND=(--find-links "$WHEELS")
[ "$OFFLINE" = 1 ] && FIND+=(--no-index)

install_system_packages() {
  # $1 = runtime: what the final image needs; build: plus compilers and headers when Horovod or
  # mpi4py must be compiled here (no wheel for them).
  local need="python3 python3-venv openmpi-bin openssh-server openssh-client procps ca-certificates"
  if [ "$1" = build ]; then
    have_wheel horovod || need="$need python3-dev g++ make cmake libopenmpi-dev"
    have_wheel mpi4py || need="$need python3-dev gcc libopenmpi-dev"
  fi
  local missing="" p
  for p in $need; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    [ "$OFFLINE" = 1 ] && die "OFFLINE=1, but the base image lacks:$missing. Build on a base image that has them (scripts/docker_base_image.sh makes one), or build with network (OFFLINE=0)."
    say "Installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends $missing
    rm -rf /var/lib/apt/lists/*
  fi
  # Host keys are made by each container at its first start (entrypoint.sh), never baked in.
  rm -f /etc/ssh/ssh_host_*
}

build_horovod() {
  # Same recipe as scripts/setup.sh: Horovod 0.28.1 passes -std=c++14, which current torch
  # headers reject, so a compiler wrapper upgrades it to C++17; Gloo needs CMake 3.x.
  local tmp
  tmp=$(mktemp -d)
  cat > "$tmp/cxx17" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do if [ "$a" = "-std=c++14" ]; then args+=("-std=c++17"); else args+=("$a"); fi; done
exec g++ "${args[@]}"
WRAP
  chmod +x "$tmp/cxx17"
  cmake --version | head -1 | grep -q ' 3\.' || die "Horovod's Gloo needs CMake 3.x; the base image has $(cmake --version | head -1)."
  say "Building Horovod $HOROVOD_VERSION against $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') (several minutes)."
  (
    cd "$tmp"
    export CXX="$tmp/cxx17" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1
    export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
    "${PIP[@]}" install --no-build-isolation --no-deps "horovod==$HOROVOD_VERSION" > "$tmp/build.log" 2>&1 \
      || { tail -40 "$tmp/build.log" >&2; die "Horovod failed to build (last lines above)."; }
  )
  rm -rf "$tmp"
}

case "$STEP" in
system)
  install_system_packages runtime
  ;;
deps)
  install_system_packages build
  python3 -m venv "$VENV"
  if have_wheel torch || [ "$OFFLINE" = 1 ]; then
    "${PIP[@]}" install "${FIND[@]}" "$TORCH_SPEC"
  else
    say "Installing $TORCH_SPEC from $TORCH_INDEX_URL"
    "${PIP[@]}" install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple "$TORCH_SPEC"
  fi
  # Horovod is built (or installed) without build isolation, against the torch above.
  "${PIP[@]}" install "${FIND[@]}" setuptools wheel packaging psutil pyyaml cloudpickle cffi
  if have_wheel horovod; then
    "${PIP[@]}" install --no-deps "$WHEELS"/horovod-*.whl
  else
    [ "$OFFLINE" = 0 ] || die "OFFLINE=1 needs a Horovod wheel in docker/wheels (docker/stage_wheels.sh copies the one 'make setup' built)."
    build_horovod
  fi
  if have_wheel mpi4py; then
    "${PIP[@]}" install --no-deps "$WHEELS"/mpi4py-*.whl
  else
    "${PIP[@]}" install "${FIND[@]}" --no-binary mpi4py "mpi4py>=3.1"
  fi
  # hvd_trainer's own dependencies, read from setup.py (the package source is not here yet).
  mkdir -p /tmp/hvd_stub/hvd_trainer
  cp "$SRC"/setup.py /tmp/hvd_stub/
  touch /tmp/hvd_stub/hvd_trainer/__init__.py
  "${PIP[@]}" install "${FIND[@]}" --no-build-isolation /tmp/hvd_stub
  "${PIP[@]}" uninstall -y hvd_trainer
  rm -rf /tmp/hvd_stub
  check=$("$VENV/bin/horovodrun" --check-build 2>&1) || true
  for want in PyTorch MPI Gloo; do
    printf '%s\n' "$check" | grep -Eq "\[X\] $want\b" || { printf '%s\n' "$check" >&2; die "Horovod in the image lacks $want."; }
  done
  ;;
package)
  "${PIP[@]}" install --no-deps --no-build-isolation --no-index "$SRC"
  "$VENV/bin/python" -c 'import hvd_trainer.cli, hvd_trainer.preflight'
  ;;
*)
  die "unknown step '$STEP' (system, deps or package)"
  ;;
esac
say "Step '$STEP' done."
