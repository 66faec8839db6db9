"""A FireWorks launcher killed inside the workflow update of a job that returned a Response.

The launcher (tests/kill_in_update.py) SIGKILLs itself while FireWorks writes the first fine-tune loop
job's replacement (the iteration: train, explore, select, labels, test, next loop job), at the two points
a real kill can land between ``_update_wf``'s writes (see ``pfd_atomate.workflows.fireworks_repair``):

- ``mid-upsert``: one new firework written, the loop job still RUNNING. FireWorks' own recovery
  (``detect_lostruns --refresh``) re-applies the replacement, but the orphan stays READY in no workflow;
- ``after-upsert``: every firework written, the loop job COMPLETED, the workflow document not. Nothing
  in FireWorks finds it; a launcher that checks an orphan out dies before its job runs.

In both, ``pfd repair-launchpad`` + the commands of docs/workflows.md finish the flow with every job run
once (the loop job is refreshed from its completed launch, not run again) and the labels counted once.
In ``after-upsert`` a launcher first checks an orphan out (FireWorks' recovery alone), as happened in
tests/test_resume.py on 2026-12-04: it dies with "Could not find workflow in database" before the job runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from workflow_jobs import (
    BIN,
    N_INITIAL_FRAMES,
    N_LOOP_ITERATIONS,
    N_SELECT,
    TESTS_DIR,
    cu_cell,
    recover_launchpad,
    run_checked,
    start_launcher,
    stop_process,
    submit_to_fireworks,
    tiny_pfd_maker,
    wait_for,
    worker_env,
)

from pfd_atomate.workflows import start_server
from pfd_atomate.workflows.fireworks import launch_counts, workflow_state
from pfd_atomate.workflows.fireworks_repair import orphan_fireworks

#: the first loop job: its Response replaces it with iteration 0 and the next loop job
LOOP_JOB = r"^pfd fine-tune s0 i0$"


@pytest.fixture(scope="module", params=["mid-upsert", "after-upsert"])
def window(request, tmp_path_factory):
    point = request.param
    root = tmp_path_factory.mktemp(f"fw-window-{point}")
    server = start_server(root / "db")
    launchers = []
    try:
        name = f"fw_window_{point.replace('-', '_')}"
        flow = tiny_pfd_maker(distill=False).make(cu_cell())
        lp, store, first, lp_file, fworker = submit_to_fireworks(server, root, name, flow, fworker="node1")

        (root / "first").mkdir()
        with open(root / "first" / "rlaunch.log", "ab") as log:
            killed = subprocess.Popen(
                [sys.executable, str(TESTS_DIR / "kill_in_update.py"), point, LOOP_JOB,
                 "-l", str(lp_file), "-w", str(fworker), "rapidfire", "--sleep", "1"],
                cwd=root / "first", stdout=log, stderr=subprocess.STDOUT, env=worker_env())
        launchers.append(killed)
        killed.wait(600)
        loop = lp.fireworks.find_one({"name": {"$regex": LOOP_JOB}})
        wf = lp.workflows.find_one({"nodes": first})
        after_kill = {
            "rc": killed.returncode,
            "orphans": orphan_fireworks(lp),
            "loop_state": loop["state"],
            "loop_state_in_workflow": wf["fw_states"][str(loop["fw_id"])],
            "locked": "locked" in wf,
            # FireWorks' own finder, read-only: RUNNING fireworks whose launch completed
            "inconsistent": lp.detect_lostruns(expiration_secs=0)[2],
        }

        checked_out = None
        if point == "after-upsert":
            # the old recovery: unlock, then a launcher checks out an orphan (FW_config.yaml in its folder: wait 2 s,
            # not 5 minutes, for the lock of the workflow that does not exist)
            run_checked(BIN / "lpad", "-l", lp_file, "admin", "unlock", "-i", loop["fw_id"])
            (root / "orphan").mkdir()
            (root / "orphan" / "FW_config.yaml").write_text("WFLOCK_EXPIRATION_SECS: 2\n")
            single = subprocess.run([str(BIN / "rlaunch"), "-l", str(lp_file), "-w", str(fworker), "singleshot"],
                                    cwd=root / "orphan", capture_output=True, text=True, env=worker_env(), timeout=300)
            checked_out = lp.fireworks.find_one({"fw_id": {"$in": after_kill["orphans"]},
                                                 "launches.0": {"$exists": True}})
            after_kill["singleshot"] = single.stdout + single.stderr

        dry = run_checked(BIN / "pfd", "repair-launchpad", "-l", lp_file, "--dry-run")
        after_kill["orphans_after_dry_run"] = orphan_fireworks(lp)
        repair, _ = recover_launchpad(lp_file)
        second = start_launcher(root / "second", lp_file, fworker, until_done=True)
        launchers.append(second)
        state = wait_for(lambda: workflow_state(lp, first) in ("COMPLETED", "FIZZLED") and workflow_state(lp, first),
                         timeout=900, interval=1.0, what="workflow end")
        second.wait(120)
        store.connect()
        yield {"point": point, "lp": lp, "store": store, "flow": flow, "first": first, "loop": loop,
               "after_kill": after_kill, "checked_out": checked_out,
               "dry_run": dry.stdout, "repair": repair.stdout, "state": state}
    finally:
        for process in launchers:
            stop_process(process)
        server.stop()


def test_the_kill_left_orphans_that_fireworks_does_not_repair(window):
    after = window["after_kill"]
    assert after["rc"] == -signal.SIGKILL
    assert after["locked"]
    assert after["orphans"], "the kill should have left fireworks in no workflow"
    assert after["loop_state_in_workflow"] == "RUNNING"
    if window["point"] == "mid-upsert":
        assert len(after["orphans"]) == 1
        # the loop job was not written yet: FireWorks' detect_lostruns --refresh finds it (not the orphan)
        assert after["loop_state"] == "RUNNING"
        assert window["loop"]["fw_id"] in after["inconsistent"]
    else:
        # written COMPLETED, the workflow says RUNNING: detect_lostruns sees nothing, the flow would never end
        assert after["loop_state"] == "COMPLETED"
        assert after["inconsistent"] == []
        # and a launcher that checks an orphan out dies before running its job
        orphan = window["checked_out"]
        assert orphan is not None and orphan["state"] == "FIZZLED"
        assert f"Could not find workflow in database: {orphan['fw_id']}" in after["singleshot"]


def test_flow_completes_and_the_loop_job_ran_once(window):
    assert window["state"] == "COMPLETED"
    report = window["store"].get_output(window["flow"].jobs[-1].uuid, load=True)
    assert report["n_iterations"] == N_LOOP_ITERATIONS
    assert report["n_dft_labels"] == N_INITIAL_FRAMES + N_LOOP_ITERATIONS * N_SELECT
    counts = launch_counts(window["lp"], window["first"])
    # every firework of the flow ran once: the loop job was refreshed from its completed launch
    assert set(counts.values()) == {1}, counts
    assert counts[window["loop"]["fw_id"]] == 1
    assert orphan_fireworks(window["lp"]) == []
    keys = [(d["uuid"], d["index"]) for d in window["store"].query({}, properties=["uuid", "index"])]
    assert len(keys) == len(set(keys)) == len(counts)


def test_repair_reported_what_it_changed(window):
    import json

    report = json.loads(window["repair"])
    after = window["after_kill"]
    assert report["deleted_orphans"] == after["orphans"]
    # the dry run reported the same and changed nothing
    assert json.loads(window["dry_run"]) == {**report, "dry_run": True}
    assert after["orphans_after_dry_run"] == after["orphans"]
    if window["point"] == "mid-upsert":
        assert report["unlocked"] and report["restored_running"] == []
    else:  # unlocked already by lpad admin unlock before the singleshot launcher
        assert report["unlocked"] == [] and report["restored_running"] == [window["loop"]["fw_id"]]
