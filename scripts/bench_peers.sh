#!/usr/bin/env bash
# Installs the peers that `make bench` compares hvd_trainer with, in their own virtualenv
# (benchmarks/.venv-peers, git-ignored), so that hvd_trainer's .venv never changes:
#
#   PyTorch Lightning (the `lightning` package, pinned in benchmarks/peers/requirements.txt)
#
# The peers must run on exactly the torch that hvd_trainer runs on, or the comparison measures
# two PyTorch builds. So the peers' venv does not install torch at all: a .pth file puts the
# main venv's site-packages (torch, numpy, pyarrow, tensorboard) on its path, after its own,
# and pip is told that torch must stay at the version installed there (it then never fetches
# another torch, e.g. a multi-GB CUDA build).
#
# Environment knobs:
#   HVD_TRAINER_VENV        the main venv (default: <repo>/.venv; `make setup` creates it)
#   HVD_TRAINER_PEERS_VENV  the peers' venv (default: <repo>/benchmarks/.venv-peers)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HVD_TRAINER_VENV:-$REPO/.venv}"
PEERS="${HVD_TRAINER_PEERS_VENV:-$REPO/benchmarks/.venv-peers}"
REQS="$REPO/benchmarks/peers/requirements.txt"

say() { printf '[bench-peers] %s\n' "$*"; }
die() { printf '\n[bench-peers] ERROR: %s\n\n' "$*" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || die "The main virtualenv $VENV does not exist; run 'make setup' first (make bench-peers does)."
"$VENV/bin/python" -c 'import torch' 2>/dev/null || die "torch is not importable in $VENV; run 'make setup' again."

TORCH_VERSION=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
MAIN_SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

if [ ! -x "$PEERS/bin/python" ]; then
  say "Creating $PEERS (sharing torch $TORCH_VERSION from $VENV)"
  "$VENV/bin/python" -m venv "$PEERS"
fi
PEERS_SITE=$("$PEERS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Appended to sys.path after the peers' own site-packages: what pip installs here wins, and
# everything else (torch above all) comes from the main venv.
echo "$MAIN_SITE" > "$PEERS_SITE/_hvd_trainer_main_venv.pth"

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" > "$constraints"

if "$PEERS/bin/python" - "$REQS" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        req = Requirement(line)
        assert req.specifier.contains(version(req.name), prereleases=True), req
PY
then
  say "Peers already installed in $PEERS."
else
  say "Installing $(grep -v '^#' "$REQS" | xargs) into $PEERS"
  "$PEERS/bin/python" -m pip install --disable-pip-version-check -q -c "$constraints" -r "$REQS"
fi

"$PEERS/bin/python" - "$TORCH_VERSION" <<'PY' || die "The peers' venv does not import Lightning on torch $TORCH_VERSION (see above)."
import sys
import torch, lightning
assert torch.__version__.split("+")[0] == sys.argv[1], f"torch {torch.__version__} != {sys.argv[1]}"
print(f"[bench-peers] Lightning {lightning.__version__} on torch {torch.__version__} ready in {sys.prefix}")
PY
