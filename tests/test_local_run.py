"""The local engine (:mod:`pfd_atomate.workflows.local`): FireWorks workers on the run folder's own
SecantusDB. The small PFD flow finishes with 1 and with 2 workers and spends the same labels; a
second process on a busy run folder is refused; a run killed (SIGKILL) during the second
iteration's labels resumes without paying any label twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from workflow_jobs import (
    N_INITIAL_FRAMES,
    N_LOOP_ITERATIONS,
    N_SELECT,
    TESTS_DIR,
    cu_cell,
    tiny_pfd_maker,
    wait_for,
    worker_env,
)

from pfd_atomate import queries
from pfd_atomate.workflows.local import (
    POLL_BACKOFF_MAX_S,
    RunLock,
    RunLockedError,
    RunMismatchError,
    open_run_store,
    run_flow,
)

N_LABELS = N_INITIAL_FRAMES + N_LOOP_ITERATIONS * N_SELECT


def _env() -> dict[str, str]:
    return {k: v for k, v in worker_env().items() if k in ("PYTHONPATH", "PFD_MODEL_CACHE")}


def _report(run_dir):
    with open_run_store(run_dir) as (store, _, _):
        flow_uuid = json.loads((run_dir / "run.json").read_text())["flow_uuid"]
        return queries.run_report(store, flow_uuid), queries.iteration_tests(store, flow_uuid)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same small PFD flow (no distillation) with 1 and with 2 workers."""
    out = {}
    for workers in (1, 2):
        run_dir = tmp_path_factory.mktemp(f"local-{workers}")
        flow = tiny_pfd_maker(distill=False, label_delay=1.0).make(cu_cell())
        # idle workers look for work every second (default 5 s): the 1 s labels must be seen side by side
        out[workers] = (run_dir, run_flow(flow, run_dir, workers=workers, env=_env(), worker_sleep=1))
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_flow_finishes_with_the_same_labels(runs, workers):
    run_dir, result = runs[workers]
    assert result.completed and not result.resumed and not result.failed, result
    report, tests = _report(run_dir)
    assert report["n_dft_labels"] == N_LABELS
    assert report["n_iterations"] == N_LOOP_ITERATIONS == len(tests)
    # every job folder is inside the run folder
    assert list((run_dir / "workers").rglob("launcher_*"))


def test_two_workers_ran_side_by_side(runs):
    """With 2 workers some labels ran at the same time (each label sleeps 1 s)."""
    run_dir, _ = runs[2]
    with open_run_store(run_dir) as (_, lp, _):
        spans = sorted(
            (launch["time_start"], launch["time_end"], launch["fworker"]["name"], launch["host"], launch["launch_dir"])
            for launch in lp.launches.find({}, {"time_start": 1, "time_end": 1, "fworker": 1, "host": 1,
                                                 "launch_dir": 1})
        )
    dirs = {s[4].split("/workers/")[1].split("/")[0] for s in spans}
    assert dirs == {"0", "1"}  # both workers ran jobs
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    assert overlaps >= 1


def test_same_folder_again_is_a_no_op_resume(runs):
    run_dir, first = runs[1]
    again = run_flow(tiny_pfd_maker(distill=False, label_delay=1.0).make(cu_cell()), run_dir, env=_env())
    assert again.resumed and again.completed and again.rerun == []
    assert again.flow_uuid == first.flow_uuid and again.n_fireworks == first.n_fireworks
    with pytest.raises(RunMismatchError, match="another PFD run"):
        run_flow(tiny_pfd_maker(distill=True).make(cu_cell()), run_dir, env=_env())



def test_a_reader_reaches_whoever_holds_the_folder_and_waits_out_a_holder_that_lets_go(runs):
    """``attach_run`` reads a finished run through the server of the process holding its folder (whose
    port ``open_run_store`` wrote into the folder). When the folder names a server that is gone (the
    holder was stopping), it looks again and, once the lock is free, opens the database itself."""
    import threading

    from pfd_atomate.workflows.local import attach_run

    run_dir, _ = runs[1]
    flow_uuid = json.loads((run_dir / "run.json").read_text())["flow_uuid"]
    with open_run_store(run_dir) as (_, _, server):
        assert f"port: {server.port}" in (run_dir / "jobflow.yaml").read_text()
        with attach_run(run_dir) as (store, _, record):
            assert record["flow_uuid"] == flow_uuid
            assert queries.run_report(store, flow_uuid)["n_dft_labels"] == N_LABELS
    # held, but the named server is gone: the holder lets go 3 s later
    holder = RunLock(run_dir).acquire()
    timer = threading.Timer(3.0, holder.release)
    timer.start()
    try:
        began = time.monotonic()
        with attach_run(run_dir) as (store, _, _):
            assert queries.run_report(store, flow_uuid)["n_dft_labels"] == N_LABELS
        assert time.monotonic() - began >= 3.0
    finally:
        timer.join()
        holder.release()

def test_a_second_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pfd_atomate.workflows.local import RunLock
            RunLock({str(tmp_path)!r}).acquire()
            print("locked", flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on .* since "):
            RunLock(tmp_path).acquire()
        with pytest.raises(RunLockedError):
            run_flow(tiny_pfd_maker(distill=False).make(cu_cell()), tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the folder can be taken over
    with RunLock(tmp_path):
        pass


KILLED_RUN = """
import sys
from workflow_jobs import cu_cell, tiny_pfd_maker
from pfd_atomate.workflows.local import run_flow
flow = tiny_pfd_maker(distill=False, label_delay=3.0, count_log=sys.argv[2]).make(cu_cell())
run_flow(flow, sys.argv[1], workers=1, env={"PYTHONPATH": sys.argv[3]})
"""


def _finished_labels(run_dir) -> int:
    """Static jobs of the running flow whose output (the label) is in its JobStore."""
    import yaml
    from jobflow import JobStore

    config = run_dir / "jobflow.yaml"
    if not config.is_file():
        return 0
    store = JobStore.from_dict_spec(yaml.safe_load(config.read_text())["JOB_STORE"])
    try:
        store.connect()
        return store.count({"metadata.pfd_label_keys": {"$exists": True}})
    except Exception:  # noqa: BLE001 - the server may be starting
        return 0
    finally:
        store.close()


def test_resume_after_sigkill_pays_no_label_twice(tmp_path):
    """SIGKILL the run while the second iteration labels; the rerun finishes it and every frame was
    labelled exactly once (the label being computed at the kill was not finished, so not paid)."""
    run_dir, count_log = tmp_path / "run", tmp_path / "labels.log"
    env = worker_env()
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(run_dir), str(count_log), str(TESTS_DIR)],
                               env=env, stdout=open(tmp_path / "killed.log", "w"), stderr=subprocess.STDOUT)
    try:
        # initial labels, first iteration's labels and one of the second iteration's are stored
        wait_for(lambda: _finished_labels(run_dir) >= N_INITIAL_FRAMES + N_SELECT + 1,
                 timeout=900, interval=0.2, what="second iteration labelling")
        time.sleep(1.0)  # inside the next label's 3 s delay
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    paid_before = len(count_log.read_text().splitlines())
    assert paid_before < N_LABELS  # killed before the end
    time.sleep(1.0)  # the workers died with their parent (PR_SET_PDEATHSIG): nothing is written any more
    assert len(count_log.read_text().splitlines()) == paid_before

    flow = tiny_pfd_maker(distill=False, label_delay=3.0, count_log=count_log).make(cu_cell())
    result = run_flow(flow, run_dir, workers=1, env=_env())
    assert result.resumed and result.completed, result
    assert len(result.rerun) == 1 and "pfd label" in result.rerun[0]  # the label that was running

    lines = count_log.read_text().splitlines()
    digests = [line.split()[0] for line in lines]
    assert len(digests) == len(set(digests)) == N_LABELS  # no frame labelled twice
    assert len({line.split()[1] for line in lines}) == 2  # by the killed and the resuming process
    report, tests = _report(run_dir)
    assert report["n_dft_labels"] == N_LABELS
    assert [(t["stage"], t["iteration"]) for t in tests] == [(0, 0), (1, 1)]  # one row per iteration


def test_monitor_backs_off_while_nothing_changes(tmp_path):
    """While one job runs for 14 s the monitor looks at the workflow at growing intervals (1, 2, 4 s, at most
    ``POLL_BACKOFF_MAX_S``: each look is a query to the server that shares the cores with the jobs), and the
    run still ends soon after the job; wrong poll settings are refused before anything starts."""
    from workflow_jobs import hold

    looks: list[float] = []
    start = time.perf_counter()
    result = run_flow(hold(14.0), tmp_path / "run", workers=1, env=_env(),
                      on_progress=lambda view: looks.append(time.perf_counter()))
    wall = time.perf_counter() - start
    assert result.completed
    gaps = [b - a for a, b in zip(looks, looks[1:])]
    assert max(gaps) > 3.5 and max(gaps) < POLL_BACKOFF_MAX_S + 1.0, gaps
    assert len(looks) < 12, gaps  # a fixed 1 s poll looks at least 14 times
    assert wall < 14.0 + 30.0  # start-up (server, workers) and at most one longest wait after the job
    for kwargs in ({"poll_interval": 2.0, "max_poll_interval": 1.0}, {"worker_sleep": 0}):
        with pytest.raises(ValueError, match="poll_interval|worker_sleep"):
            run_flow(hold(1.0), tmp_path / "refused", **kwargs)
    assert not (tmp_path / "refused").exists()
