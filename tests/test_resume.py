"""Resume a PFD flow after its FireWorks launcher is SIGKILLed in the middle of the fine-tune loop.

The launcher process is killed for real while a job of the second loop iteration runs. The
firework it ran stays RUNNING (a lost run); ``lpad detect_lostruns --rerun --refresh`` marks it for a
rerun (or, when the kill landed after its launch completed and before the firework's state was updated,
refreshes it from that launch), a new ``rlaunch rapidfire`` finishes the flow. Everything that had finished (the
labels of the first iteration and the initial labels) is not computed again, and every job
has exactly one output in the JobStore. (The jobflow-remote runner kill is in
tests/test_jobflow_remote.py, on that run.)
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import pytest
from workflow_jobs import (
    N_INITIAL_FRAMES,
    N_LOOP_ITERATIONS,
    N_SELECT,
    cu_cell,
    is_static_label,
    recover_launchpad,
    start_launcher,
    stop_process,
    submit_to_fireworks,
    tiny_pfd_maker,
    wait_for,
)

from pfd_atomate.workflows import start_server
from pfd_atomate.workflows.fireworks import launch_counts, workflow_state

#: jobs of the second iteration, one of which the launcher is running when it is killed
SECOND_ITERATION = r"^pfd (train|explore|test) s1 i1"


#: how long the killed firework must have been RUNNING: a job that returns a Response in a few ms (the explore job
#: that replaces itself with its MD) would mostly be killed inside FireWorks' workflow update, which
#: tests/test_fireworks_update_window.py covers; this test is about a lost run
MIN_RUNNING_S = 0.5


def running_for(lp, seconds: float, seen: dict) -> dict | None:
    """The second-iteration firework that has been RUNNING for at least ``seconds`` (polled; ``seen``: fw_id →
    first time seen running), or None."""
    doc = lp.fireworks.find_one({"state": "RUNNING", "name": {"$regex": SECOND_ITERATION}})
    if doc is None:
        return None
    first_seen = seen.setdefault(doc["fw_id"], time.monotonic())
    return doc if time.monotonic() - first_seen >= seconds else None


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fw-resume")
    server = start_server(root / "db")
    launchers = []
    try:
        flow = tiny_pfd_maker(distill=False).make(cu_cell())
        lp, store, first, lp_file, fworker = submit_to_fireworks(server, root, "fw_resume", flow, fworker="node1")

        launcher = start_launcher(root / "first", lp_file, fworker)
        launchers.append(launcher)
        seen: dict = {}
        running = wait_for(lambda: running_for(lp, MIN_RUNNING_S, seen),
                           timeout=900, interval=0.1, what="second loop iteration running")
        os.kill(launcher.pid, signal.SIGKILL)
        kill_time = datetime.now(timezone.utc)
        launcher.wait(30)
        state_after_kill = lp.get_fw_dict_by_id(running["fw_id"])["state"]
        # a kill inside FireWorks' complete_launch leaves the launch COMPLETED and the firework RUNNING
        # (seen here once, 2026-12-04: the flow then hung): that job finished and must not run again, only be refreshed
        finished_before_kill = lp.launches.count_documents({"fw_id": running["fw_id"], "state": "COMPLETED"}) > 0
        time.sleep(1)  # nothing may change once the launcher is gone
        assert lp.get_fw_dict_by_id(running["fw_id"])["state"] == state_after_kill

        # the commands of docs/workflows.md: mend what a kill inside a workflow update leaves (a lock, orphaned
        # fireworks; tests/test_fireworks_update_window.py), find the lost run, rerun it, launch again
        _, detect = recover_launchpad(lp_file)
        second = start_launcher(root / "second", lp_file, fworker, until_done=True)
        launchers.append(second)
        state = wait_for(lambda: workflow_state(lp, first) in ("COMPLETED", "FIZZLED") and workflow_state(lp, first),
                         timeout=900, interval=1.0, what="workflow end")
        second.wait(120)  # a single rapidfire launcher stops by itself when the flow is done
        store.connect()
        yield {"lp": lp, "store": store, "flow": flow, "first": first, "running": running,
               "kill_time": kill_time, "killed_rc": launcher.returncode, "state_after_kill": state_after_kill,
               "detect": detect.stdout + detect.stderr, "state": state, "finished_before_kill": finished_before_kill}
    finally:
        for process in launchers:
            stop_process(process)
        server.stop()


def test_launcher_was_killed_mid_loop(killed_and_resumed):
    run = killed_and_resumed
    assert run["killed_rc"] == -signal.SIGKILL
    # the firework it ran was left RUNNING: a lost run, not a failure FireWorks saw
    assert run["state_after_kill"] == "RUNNING"
    assert str(run["running"]["fw_id"]) in run["detect"]


def test_flow_finishes_after_restart(killed_and_resumed):
    run = killed_and_resumed
    assert run["state"] == "COMPLETED"
    report = run["store"].get_output(run["flow"].jobs[-1].uuid, load=True)
    assert report["n_iterations"] == N_LOOP_ITERATIONS
    assert report["n_dft_labels"] == N_INITIAL_FRAMES + N_LOOP_ITERATIONS * N_SELECT


def test_only_the_interrupted_job_ran_again(killed_and_resumed):
    run = killed_and_resumed
    counts = launch_counts(run["lp"], run["first"])
    rerun = {fw_id for fw_id, n in counts.items() if n != 1}
    if run["finished_before_kill"]:  # refreshed from its completed launch, not run again
        assert rerun == set() and counts[run["running"]["fw_id"]] == 1
    else:
        assert rerun == {run["running"]["fw_id"]}
        assert counts[run["running"]["fw_id"]] == 2
    # ... and the JobStore holds one output per job
    keys = [(d["uuid"], d["index"]) for d in run["store"].query({}, properties=["uuid", "index"])]
    assert len(keys) == len(set(keys)) == len(counts)


def test_finished_labels_were_not_recomputed(killed_and_resumed):
    run = killed_and_resumed
    lp = run["lp"]
    labels = [fw for fw in lp.fireworks.find({}, {"fw_id": 1, "name": 1, "launches": 1}) if is_static_label(fw["name"])]
    before = []
    for fw in labels:
        (launch_id,) = fw["launches"]
        end = datetime.fromisoformat(lp.launches.find_one({"launch_id": launch_id})["time_end"])
        if end < run["kill_time"]:
            before.append(fw)
    # the initial labels and those of the first iteration were done before the kill ...
    assert len(before) == N_INITIAL_FRAMES + N_SELECT
    # ... and their outputs are the ones written then
    for fw in before:
        uuid = lp.get_fw_by_id(fw["fw_id"]).tasks[0]["job"].uuid
        (doc,) = run["store"].query({"uuid": uuid}, properties=["completed_at"])
        assert datetime.fromisoformat(doc["completed_at"]).astimezone(timezone.utc) < run["kill_time"]
