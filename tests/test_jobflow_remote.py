"""The PFD flow through jobflow-remote: a project with two local ``shell`` workers ("dft" and
"ml") whose queue and JobStore (documents + GridFS data) are on a real MongoDB-protocol server
(SecantusDB on loopback).

Training/MD/test jobs are routed to the "ml" worker with ``set_run_config(..., dynamic=True)``,
which must also reach the jobs the fine-tune loop creates at run time. In the middle of the
loop the runner process is SIGKILLed; after ``jf admin unlock`` and ``unlock-flow`` a new runner finishes
the flow and nothing that had finished is run again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from workflow_jobs import (
    BIN,
    N_INITIAL_FRAMES,
    N_LOOP_ITERATIONS,
    cu_cell,
    is_ml_job,
    is_static_label,
    start_runner,
    stop_process,
    tiny_pfd_maker,
    wait_for,
    worker_env,
)

from pfd_atomate import queries
from pfd_atomate.workflows import start_server
from pfd_atomate.workflows.jobflow_remote import (
    FAST_RUNNER,
    local_worker,
    project_config,
    route_jobflow_remote,
    write_project,
)

PROJECT = "pfd_jfr_test"
SECOND_ITERATION = r"^pfd (train|explore|test) s1 i1"


def _flow_state(jc) -> str | None:
    (flow,) = jc.get_flows_info()
    return flow.state.value if flow.state.value in ("COMPLETED", "FAILED") else None


@pytest.fixture(scope="module")
def jfr_run(tmp_path_factory):
    import jobflow_remote
    from jobflow_remote import JobController, submit_flow
    from jobflow_remote.jobs.state import JobState

    root = tmp_path_factory.mktemp("jfr")
    server = start_server(root / "db")
    env = worker_env({"JFREMOTE_PROJECTS_FOLDER": str(root / "projects"), "JFREMOTE_PROJECT": PROJECT})
    # this process reads the same project (jobflow-remote reads its settings at import)
    saved = (jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project)
    jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project = str(root / "projects"), PROJECT
    runner = None
    try:
        pre_run = "export OMP_NUM_THREADS=1"
        config = project_config(
            PROJECT, server.host, server.port, "jfr",
            workers={"dft": local_worker(root / "work_dft", pre_run=pre_run),
                     "ml": local_worker(root / "work_ml", pre_run=pre_run)},
            runner=FAST_RUNNER, base_dir=root / "project")
        write_project(root / "projects", config)
        jc = JobController.from_project_name(PROJECT)
        jc.reset()

        # no distillation here: each jobflow-remote job is a fresh Python process (~10 s of imports on 2 cores);
        # distillation through a distributed manager is covered by the FireWorks test
        flow = tiny_pfd_maker(distill=False).make(cu_cell())
        route_jobflow_remote(flow, worker="ml")
        submit_flow(flow, worker="dft", project=PROJECT)

        t0 = time.monotonic()
        runner = start_runner(root / "runner1.log", env)

        def second_iteration_running():
            active = jc.get_jobs_info(states=[JobState.SUBMITTED, JobState.RUNNING])
            return [j for j in active if re.match(SECOND_ITERATION, j.name or "")]

        running = wait_for(second_iteration_running, timeout=1200, interval=0.5, what="second iteration running")
        os.kill(runner.pid, signal.SIGKILL)
        kill_time = datetime.now(timezone.utc)
        runner.wait(30)
        killed_rc = runner.returncode

        # recovery as in docs/workflows.md: release locks the dead runner held, start a runner
        unlock = subprocess.run([str(BIN / "jf"), "admin", "unlock", "-y"], capture_output=True, text=True,
                                env=env, timeout=300)
        # a runner killed while it completed a job also held the flow's lock (test_jobflow_remote_update_window.py)
        unlock_flow = subprocess.run([str(BIN / "jf"), "admin", "unlock-flow", "-y"], capture_output=True, text=True,
                                     env=env, timeout=300)
        runner = start_runner(root / "runner2.log", env)
        state = wait_for(lambda: _flow_state(jc), timeout=1500, interval=1.0, what="flow end")
        wall = time.monotonic() - t0
        print(f"jobflow-remote (runner killed once): {wall:.0f} s wall")
        store = jc.jobstore
        store.connect()
        yield {"jc": jc, "store": store, "flow": flow, "state": state, "root": root, "running": running,
               "kill_time": kill_time, "killed_rc": killed_rc, "unlock": unlock, "unlock_flow": unlock_flow,
               "wall": wall}
    finally:
        if runner is not None:
            stop_process(runner)
        jobflow_remote.SETTINGS.projects_folder, jobflow_remote.SETTINGS.project = saved
        server.stop()


def _jobs(jc):
    return sorted(jc.get_jobs_info(), key=lambda j: int(j.db_id))


def test_pfd_flow_completes_through_jobflow_remote(jfr_run):
    jc = jfr_run["jc"]
    states = {j.name: j.state.value for j in _jobs(jc)}
    assert jfr_run["state"] == "COMPLETED", states
    assert set(states.values()) == {"COMPLETED"}
    report = jfr_run["store"].get_output(jfr_run["flow"].jobs[-1].uuid, load=True)
    assert report["n_iterations"] == N_LOOP_ITERATIONS
    assert report["n_dft_labels"] == N_INITIAL_FRAMES + sum(it["n_labelled"] for it in report["iterations"])
    assert report["student_dft_test"] is None and report["teacher_test"]["n_frames"] == report["iterations"][-1][
        "n_labelled"]  # the teacher is tested on the last iteration set
    # the queries find the run in the project's JobStore
    assert queries.latest_run(jfr_run["store"], "Cu")["run_uuid"] == jfr_run["flow"].uuid
    assert queries.final_model(jfr_run["store"], "Cu", "teacher").backend == "chgnet"


def test_ml_jobs_routed_to_the_ml_worker_including_later_iterations(jfr_run):
    jobs = _jobs(jfr_run["jc"])
    submitted = {job.uuid for job, _ in jfr_run["flow"].iterflow()}
    ml = [j for j in jobs if is_ml_job(j.name)]
    # jobs created at run time by the loop (second iteration) are among them
    assert any(j.name == "pfd test s1 i1" and j.uuid not in submitted for j in ml)
    assert {j.worker for j in ml} == {"ml"}
    assert {j.worker for j in jobs if is_static_label(j.name)} == {"dft"}
    for j in jobs:  # each job ran in its worker's folder
        folder = "work_ml" if is_ml_job(j.name) else "work_dft"
        assert Path(j.run_dir).is_relative_to(jfr_run["root"] / folder), (j.name, j.run_dir)


def test_labels_ran_in_parallel(jfr_run):
    labels = [j for j in _jobs(jfr_run["jc"]) if is_static_label(j.name)]
    assert len(labels) == N_INITIAL_FRAMES + 2 * N_LOOP_ITERATIONS
    overlapping = [(a.db_id, b.db_id) for a in labels for b in labels
                   if a.db_id < b.db_id and a.start_time < b.end_time and b.start_time < a.end_time]
    assert overlapping


def test_runner_sigkill_mid_loop_lost_nothing(jfr_run):
    assert jfr_run["killed_rc"] == -signal.SIGKILL
    assert jfr_run["unlock"].returncode == 0, jfr_run["unlock"].stderr
    assert jfr_run["unlock_flow"].returncode == 0, jfr_run["unlock_flow"].stderr
    jc, store = jfr_run["jc"], jfr_run["store"]
    kill_time = jfr_run["kill_time"].replace(tzinfo=None)  # jobflow-remote stores naive UTC
    jobs = _jobs(jc)
    before = [j for j in jobs if is_static_label(j.name) and j.end_time < kill_time]
    assert len(before) >= N_INITIAL_FRAMES + 2  # initial and first-iteration labels were done
    for j in before:  # ... and not run again: their stored output is the one from before the kill
        (doc,) = store.query({"uuid": j.uuid}, properties=["completed_at"])
        assert datetime.fromisoformat(doc["completed_at"]).astimezone(timezone.utc) < jfr_run["kill_time"]
    keys = [(d["uuid"], d["index"]) for d in store.query({}, properties=["uuid", "index"])]
    assert len(keys) == len(set(keys)) == len(jobs)


def test_project_is_checked_before_it_is_written(tmp_path):
    with pytest.raises(ValueError, match="at least one worker"):
        project_config("p", "127.0.0.1", 27017, "db", workers={})
    bad = project_config("p", "127.0.0.1", 27017, "db",
                         workers={"w": {**local_worker(tmp_path / "w"), "scheduler_type": "no-such-scheduler"}})
    with pytest.raises(ValueError, match="scheduler"):
        write_project(tmp_path / "projects", bad)
    assert not (tmp_path / "projects" / "p.yaml").exists()
    with pytest.raises(ValueError, match="worker, an exec_config or resources"):
        route_jobflow_remote(tiny_pfd_maker(distill=False).make(cu_cell()))
