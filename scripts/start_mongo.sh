#!/usr/bin/env bash
# Start a SecantusDB server (MongoDB wire protocol, WiredTiger storage) on 127.0.0.1 for tests
# and laptop runs of PFD on FireWorks / jobflow-remote. It runs in the foreground; stop it with
# Ctrl-C (or SIGTERM). Data in STORAGE_DIR survive restarts; ":memory:" keeps nothing.
#
#   scripts/start_mongo.sh [STORAGE_DIR] [PORT]      (PORT 0: any free port, printed at start)
#
# On a cluster use your site's MongoDB instead: nothing in pfd-atomate depends on SecantusDB.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PFD_PYTHON:-$here/.venv/bin/python}"
storage="${1:-./pfd-mongo-data}"
port="${2:-27017}"
exec "$python" -m pfd_atomate.workflows.mongo --host 127.0.0.1 --port "$port" --storage-path "$storage"
