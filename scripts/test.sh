#!/usr/bin/env bash
# Set up everything (idempotent), build the documentation (strict) and run the default test suite
# (long runs are marked `slow`; add --runslow to include them). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# the documentation builds, with every reference resolved (strict: a warning fails)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "${TMPDIR:-/tmp}/pfd-atomate-site"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout 1200 -ra --durations=25 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; fi
exit "$rc"
