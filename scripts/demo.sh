#!/usr/bin/env bash
# Set up everything (idempotent) and run the PFD demo: diamond Si, CP2K labels, the DPA-4
# foundation model fine-tuned by PFD, distilled into a compressed deepmd-kit se_e2_a student, on
# two single-threaded workers. Results go to runs/demo-si/ (report.json, parity plots); running it
# again resumes an interrupted run. Extra arguments go to `pfd demo` (e.g. --quick, --run-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/pfd demo "$@"
