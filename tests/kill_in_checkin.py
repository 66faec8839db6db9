"""``jf runner run`` that SIGKILLs itself while jobflow-remote completes a job that returned a Response.

Usage: ``python kill_in_checkin.py POINT NAME_REGEX``. jobflow-remote's ``JobController.checkin_job``
appends the Response's flow (``_append_flow``: the flow document's ``ids`` and ``parents`` first, then
``jobs.insert_many``) before it writes the completed job's state. The runner kills itself, for the first
job whose name matches ``NAME_REGEX``:

- ``mid-append``: after the flow document was updated, before the new jobs are inserted;
- ``after-append``: after the new jobs were inserted, before the completed job's state is written.
"""

from __future__ import annotations

import os
import re
import signal
import sys

import pymongo.collection
from jobflow_remote.cli.jf import app
from jobflow_remote.jobs.jobcontroller import JobController


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, name_regex: str) -> None:
    """Patch this process's jobflow-remote and pymongo so that it dies at ``point`` (module docstring)."""
    append, insert_many = JobController._append_flow, pymongo.collection.Collection.insert_many
    state = {"armed": False}

    def _append_flow(self, job_doc, *args, **kwargs):
        matches = bool(re.search(name_regex, (job_doc.get("job") or {}).get("name") or ""))
        state["armed"] = matches and point == "mid-append"
        append(self, job_doc, *args, **kwargs)
        if matches and point == "after-append":
            _die()

    def _insert_many(self, *args, **kwargs):
        if state["armed"]:
            _die()
        return insert_many(self, *args, **kwargs)

    JobController._append_flow = _append_flow
    pymongo.collection.Collection.insert_many = _insert_many


if __name__ == "__main__":
    point, regex = sys.argv[1:3]
    if point not in ("mid-append", "after-append"):
        raise SystemExit(f"POINT must be mid-append or after-append, not {point!r}")
    arm(point, regex)
    sys.argv = ["jf", "runner", "run"]
    sys.exit(app())
