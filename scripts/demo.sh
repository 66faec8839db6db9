#!/usr/bin/env bash
# Set up everything (idempotent) and run the PFD demo: diamond Si, CP2K labels, CHGNet
# fine-tuned by PFD, distilled into a deepmd-kit se_e2_a student. Results go to runs/demo-si/
# (report.json, parity plots). Extra arguments go to the demo (e.g. --quick, --run-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pfd_atomate.demo "$@"
