#!/usr/bin/env bash
# One idempotent setup for hvd_trainer: OpenMPI, a virtualenv, PyTorch, Horovod 0.28.1
# built against that PyTorch (Gloo + MPI), mpi4py and the package itself.
#
# Environment knobs:
#   HVD_TRAINER_TORCH_SPEC  pip spec for torch (default torch==2.13.0; bring your own CUDA build here)
#   HVD_TRAINER_VENV        virtualenv path (default: <repo>/.venv)
#   HVD_TRAINER_CACHE       where built wheels are kept (default: ~/.cache/hvd_trainer)
#   HVD_TRAINER_PYTHON      interpreter used to create the venv (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HVD_TRAINER_VENV:-$REPO/.venv}"
CACHE="${HVD_TRAINER_CACHE:-$HOME/.cache/hvd_trainer}"
TORCH_SPEC="${HVD_TRAINER_TORCH_SPEC:-torch==2.13.0}"
PYTHON="${HVD_TRAINER_PYTHON:-python3}"
HOROVOD_VERSION=0.28.1

say() { printf '[setup] %s\n' "$*"; }
die() { printf '\n[setup] ERROR: %s\n\n' "$*" >&2; exit 1; }

start=$(date +%s)

# --- 1. MPI -------------------------------------------------------------------------------
if ! command -v mpicxx >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "No MPI found: installing Debian's OpenMPI (openmpi-bin, libopenmpi-dev)."
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
      openmpi-bin libopenmpi-dev openssh-client
  else
    die "No MPI implementation was found (mpirun and mpicxx are not on PATH), and this script can only install one as root on a Debian/Ubuntu machine. Ask an administrator to run 'apt-get install openmpi-bin libopenmpi-dev' (or 'module load openmpi' on a cluster, or 'dnf install openmpi-devel' on RHEL), make sure mpirun and mpicxx are on PATH, then run 'make setup' again."
  fi
fi

# --- 2. CMake 3.x (Gloo's CMakeLists refuses CMake 4) ---------------------------------------
cmake_bin=""
for c in /usr/bin/cmake "$(command -v cmake 2>/dev/null || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && "$c" --version 2>/dev/null | head -1 | grep -q ' 3\.'; then cmake_bin="$c"; break; fi
done
if [ -z "$cmake_bin" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Installing CMake 3.x from Debian (needed to build Horovod's Gloo)."
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends cmake
    cmake_bin=/usr/bin/cmake
  fi
fi

# --- 3. virtualenv and PyTorch -------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  # A setup stopped while the venv was being made (Ctrl-C, a killed CI job) leaves one without pip.
  say "The virtualenv $VENV has no pip (a setup was stopped while making it): making it again."
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "Creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  say "Installing $TORCH_SPEC"
  # numpy with it: torch warns on import without it ("Failed to initialize NumPy"), and the check below imports torch.
  "${PIP[@]}" install "$TORCH_SPEC" numpy
fi
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

# Horovod's build and runtime dependencies (it is built without build isolation so that it
# compiles against the torch installed above, not a fresh one pip would download).
"${PIP[@]}" install setuptools wheel packaging psutil pyyaml cloudpickle cffi

# --- 4. Horovod, built once per (torch, python) and cached --------------------------------
WHEEL_DIR="$CACHE/horovod-$HOROVOD_VERSION-torch-$TORCH_VERSION-$PY_TAG"
hvd_ok() { "$PY" -c 'import horovod.torch' >/dev/null 2>&1; }
if ! hvd_ok; then
  wheel=$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    [ -n "$cmake_bin" ] || die "Horovod needs CMake 3.x to build (Gloo rejects CMake 4), and none was found. Install it ('apt-get install cmake' on Debian 12 gives 3.25) and run 'make setup' again."
    say "Building Horovod $HOROVOD_VERSION against torch $TORCH_VERSION (PyTorch + Gloo + MPI); this takes a few minutes once."
    build_tmp=$(mktemp -d)
    trap 'rm -rf "$build_tmp"' EXIT
    # Horovod 0.28.1 compiles with -std=c++14, which current torch headers reject: a
    # compiler wrapper upgrades the flag to C++17.
    mkdir -p "$build_tmp/bin"
    cat > "$build_tmp/bin/cxx17" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do
  if [ "$a" = "-std=c++14" ]; then args+=("-std=c++17"); else args+=("$a"); fi
done
exec "${HVD_REAL_CXX:-g++}" "${args[@]}"
WRAP
    chmod +x "$build_tmp/bin/cxx17"
    ln -s "$cmake_bin" "$build_tmp/bin/cmake"
    mkdir -p "$WHEEL_DIR"
    (
      cd "$build_tmp"
      export PATH="$build_tmp/bin:$PATH"
      export CXX="$build_tmp/bin/cxx17" HVD_REAL_CXX="${CXX:-g++}"
      export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1
      export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
      export MAKEFLAGS="-j$(nproc)"
      "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$build_tmp/wheels" "horovod==$HOROVOD_VERSION" \
        > "$build_tmp/build.log" 2>&1 || {
          tail -40 "$build_tmp/build.log" >&2
          die "Horovod $HOROVOD_VERSION failed to build against torch $TORCH_VERSION (last lines above; the full log was $build_tmp/build.log). Check that a C++17 compiler, CMake 3.x and the MPI headers (libopenmpi-dev) are installed."
        }
    )
    cp "$build_tmp"/wheels/horovod-*.whl "$WHEEL_DIR"/
    wheel=$(ls "$WHEEL_DIR"/horovod-*.whl | head -1)
  else
    say "Using cached Horovod wheel $wheel"
  fi
  "${PIP[@]}" install --no-deps --force-reinstall "$wheel"
fi

# --- 5. mpi4py (built against the MPI on this machine, cached) ------------------------------
if ! "$PY" -c 'import mpi4py' >/dev/null 2>&1; then
  MPI4PY_DIR="$CACHE/mpi4py-$PY_TAG"
  wheel=$(ls "$MPI4PY_DIR"/mpi4py-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    say "Building mpi4py against $(command -v mpicc)"
    mkdir -p "$MPI4PY_DIR"
    "${PIP[@]}" wheel --no-binary mpi4py --no-deps -w "$MPI4PY_DIR" "mpi4py>=3.1"
    wheel=$(ls "$MPI4PY_DIR"/mpi4py-*.whl | head -1)
  fi
  "${PIP[@]}" install --no-deps "$wheel"
fi

# --- 6. hvd_trainer itself (editable) and the test tools -----------------------------------
"${PIP[@]}" install -e "$REPO[test]"

# --- 7. Check the build ---------------------------------------------------------------------
check=$("$VENV/bin/horovodrun" --check-build 2>&1) || true
missing=""
for want in "PyTorch" "MPI" "Gloo"; do
  if ! printf '%s\n' "$check" | grep -Eq "\[X\] $want\b"; then missing="$missing $want"; fi
done
if [ -n "$missing" ]; then
  printf '%s\n' "$check" >&2
  die "Horovod is installed but its build lacks:$missing. Delete the cached wheel ($WHEEL_DIR) and run 'make setup' again; if MPI is missing, install libopenmpi-dev first so Horovod can find mpicxx."
fi

say "Ready in $(( $(date +%s) - start )) s: torch $TORCH_VERSION, horovod $HOROVOD_VERSION (PyTorch, MPI, Gloo). Activate with: source $VENV/bin/activate"
