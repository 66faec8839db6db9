"""A jobflow-remote runner killed while it completes a job that returned a Response (the first loop job).

The runner (tests/kill_in_checkin.py) SIGKILLs itself inside ``JobController.checkin_job`` of the first
fine-tune loop job, at the two points between its writes (``mid-append``: the flow document lists the new
jobs, which are not inserted; ``after-append``: the new jobs are inserted, the loop job is not marked
COMPLETED). The dead runner held the flow's lock: ``jf admin unlock`` (jobs) does not release it and a new
runner fails to complete the job ("Flow ... is locked"), retrying with growing delays. Recovery as in
docs/workflows.md: ``jf admin unlock``, ``jf admin unlock-flow``, a new runner. ``mid-append`` then
finishes; ``after-append`` does not (:data:`AFTER_APPEND_STALLS`, an expected failure until jobflow-remote
completes a job idempotently). Slow (19 minutes for the two cases on 2 cores, 2026-12-05: each jobflow-remote
job is a fresh Python process, and the stalled case waits for REMOTE_ERROR or 900 s), so run on request
(``--runslow``); tests/test_jobflow_remote.py runs the same recovery after a kill at a random moment.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from workflow_jobs import BIN, TESTS_DIR, cu_cell, start_runner, stop_process, tiny_pfd_maker, wait_for, worker_env

from pfd_atomate.workflows import start_server
from pfd_atomate.workflows.jobflow_remote import FAST_RUNNER, local_worker, project_config, write_project

pytestmark = pytest.mark.slow

PROJECT = "pfd_jfr_window"
LOOP_JOB = r"^pfd fine-tune s0 i0$"


#: jobflow-remote 1.0.1's checkin_job is not idempotent: completed again, the job's Response inserts its jobs a
#: second time (E11000 duplicate key on jobs' uuid_1_index_1) and the job ends in REMOTE_ERROR; the flow stalls
AFTER_APPEND_STALLS = pytest.mark.xfail(strict=True, reason="jobflow-remote re-inserts the Response's jobs")


@pytest.fixture(scope="module", params=["mid-append", pytest.param("after-append", marks=AFTER_APPEND_STALLS)])
def jfr_window(request, tmp_path_factory):
    import jobflow_remote
    from jobflow_remote import JobController, submit_flow

    point = request.param
    root = tmp_path_factory.mktemp(f"jfr-window-{point}")
    server = start_server(root / "db")
    env = worker_env({"JFREMOTE_PROJECTS_FOLDER": str(root / "projects"), "JFREMOTE_PROJECT": PROJECT})
    saved = (jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project)
    jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project = str(root / "projects"), PROJECT
    runners = []
    try:
        config = project_config(PROJECT, server.host, server.port, "jfr",
                                workers={"w": local_worker(root / "work", pre_run="export OMP_NUM_THREADS=1")},
                                runner=FAST_RUNNER, base_dir=root / "project")
        write_project(root / "projects", config)
        jc = JobController.from_project_name(PROJECT)
        jc.reset()
        flow = tiny_pfd_maker(distill=False).make(cu_cell())
        submit_flow(flow, worker="w", project=PROJECT)
        with open(root / "runner1.log", "ab") as log:
            killed = subprocess.Popen([sys.executable, str(TESTS_DIR / "kill_in_checkin.py"), point, LOOP_JOB],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        runners.append(killed)
        killed.wait(900)
        (flow_doc,) = list(jc.flows.find({}))
        listed = {(u, i) for _, u, i in [tuple(x) for x in flow_doc["ids"]]}
        present = {(d["uuid"], d["index"]) for d in jc.jobs.find({}, {"uuid": 1, "index": 1})}
        loop = jc.jobs.find_one({"job.name": {"$regex": LOOP_JOB}}, {"state": 1, "db_id": 1})
        after_kill = {"rc": killed.returncode, "listed_missing": sorted(listed - present),
                      "unlisted": sorted(present - listed), "loop_state": loop["state"], "n_jobs": len(present)}
        print(point, after_kill)
        unlock = subprocess.run([str(BIN / "jf"), "admin", "unlock", "-y"], capture_output=True, text=True,
                                env=env, timeout=300)
        after_kill["flow_locked"] = jc.flows.find_one({"lock_id": {"$ne": None}}) is not None
        unlock_flow = subprocess.run([str(BIN / "jf"), "admin", "unlock-flow", "-y"], capture_output=True,
                                     text=True, env=env, timeout=300, check=True)
        second = start_runner(root / "runner2.log", env)
        runners.append(second)
        t0 = time.monotonic()

        def ended():
            (f,) = jc.get_flows_info()
            if jc.jobs.find_one({"state": "REMOTE_ERROR"}):  # out of retries: stalled
                return "REMOTE_ERROR"
            return f.state.value if f.state.value in ("COMPLETED", "FAILED") else None

        try:
            state = wait_for(ended, timeout=900, interval=2.0, what="flow end")
        except TimeoutError:
            state = "NOT ENDED"
        jobs = list(jc.jobs.find({}, {"uuid": 1, "index": 1, "state": 1, "job.name": 1, "error": 1}))
        print(point, "state", state, "after", round(time.monotonic() - t0), "s;", len(jobs), "jobs",
              sorted({j["state"] for j in jobs}), unlock.stdout[-100:], unlock_flow.stdout[-100:])
        for j in jobs:
            if j["state"] != "COMPLETED":
                print("  ", j["job"]["name"], j["state"], (j.get("error") or "")[-400:])
        yield {"point": point, "after_kill": after_kill, "state": state, "jobs": jobs}
    finally:
        for process in runners:
            stop_process(process)
        jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project = saved
        server.stop()


def test_flow_completes_after_a_kill_inside_checkin(jfr_window):
    assert jfr_window["after_kill"]["rc"] == -signal.SIGKILL
    assert jfr_window["state"] == "COMPLETED"
    keys = [(j["uuid"], j["index"]) for j in jfr_window["jobs"]]
    assert len(keys) == len(set(keys))
