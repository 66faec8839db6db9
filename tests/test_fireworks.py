"""The PFD flow on FireWorks: two ``rlaunch rapidfire`` launchers in parallel, a MongoDB JobStore
(GridFS for data) and the LaunchPad on a real MongoDB-protocol server (SecantusDB on loopback).

One small but complete PFD flow (perturb, EMT labels, two fine-tune iterations created at run
time by ``Response(replace=...)``, distillation, report) runs to COMPLETED. Training/MD/test
jobs are pinned to the launcher named "gpu" (``_fworker``), labels run on either launcher.
The queries of :mod:`pfd_atomate.queries` are checked on the store the launchers wrote.
"""

from __future__ import annotations

import time
from datetime import datetime
from types import SimpleNamespace

import pytest
from jobflow import Flow
from workflow_jobs import (
    N_INITIAL_FRAMES,
    N_LOOP_ITERATIONS,
    check_big_model,
    cu_cell,
    is_ml_job,
    is_static_label,
    make_big_model,
    start_launcher,
    stop_process,
    submit_to_fireworks,
    tiny_pfd_maker,
    wait_for,
)

from pfd_atomate import queries
from pfd_atomate.workflows import start_server
from pfd_atomate.workflows.fireworks import launch_counts, route_fireworks, workflow_state, write_fworker_file

FINAL_STATES = ("COMPLETED", "FIZZLED", "DEFUSED")


def _fizzled_report(lp) -> str:
    """Names and errors of fizzled fireworks, for assertion messages."""
    lines = []
    for fw in lp.fireworks.find({"state": "FIZZLED"}, {"fw_id": 1, "name": 1, "launches": 1}):
        launch = lp.launches.find_one({"launch_id": {"$in": fw["launches"]}}, {"action": 1}) or {}
        stack = ((launch.get("action") or {}).get("stored_data") or {}).get("_exception", {}).get("_stacktrace", "")
        lines.append(f"{fw['fw_id']} {fw['name']}: {stack[-1500:]}")
    return "\n".join(lines)


def run_workflow(lp, first_fw_id: int, launchers: list, timeout: float = 1500) -> str:
    """Wait until the workflow of ``first_fw_id`` reaches a final state, then stop the launchers."""
    try:
        def final_state():
            state = workflow_state(lp, first_fw_id)
            return state if state in FINAL_STATES else None

        return wait_for(final_state, timeout, 1.0, "workflow end")
    finally:
        for process in launchers:
            stop_process(process)


def launches_by_fw(lp) -> dict[int, list[dict]]:
    """``{fw_id: [launch docs]}`` with fworker name, start/end time (current and archived launches)."""
    out = {}
    for fw in lp.fireworks.find({}, {"fw_id": 1, "launches": 1, "archived_launches": 1}):
        ids = list(fw.get("launches") or []) + list(fw.get("archived_launches") or [])
        out[fw["fw_id"]] = list(lp.launches.find({"launch_id": {"$in": ids}}))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("fw-mongo") / "db")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fw_run(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("fw-parallel")
    # labels cost ~2 s each (EMT + delay, longer than a launcher's 1 s poll), so two
    # launchers can be seen labelling at once
    flow = tiny_pfd_maker(label_delay=2.0).make(cu_cell())
    route_fireworks(flow, fworker="gpu")
    lp, store, first, lp_file, _ = submit_to_fireworks(server, root, "fw_parallel", flow)
    t0 = time.monotonic()
    launchers = [start_launcher(root / name, lp_file, write_fworker_file(root / f"{name}.yaml", name))
                 for name in ("cpu", "gpu")]
    state = run_workflow(lp, first, launchers)
    wall = time.monotonic() - t0
    store.connect()
    print(f"FireWorks, 2 launchers: {wall:.0f} s wall")
    return SimpleNamespace(lp=lp, store=store, flow=flow, first=first, state=state, root=root, wall=wall)


def test_pfd_flow_completes_on_two_parallel_launchers(fw_run):
    lp, store = fw_run.lp, fw_run.store
    assert fw_run.state == "COMPLETED", _fizzled_report(lp)
    assert lp.fireworks.count_documents({"state": {"$ne": "COMPLETED"}}) == 0
    report = store.get_output(fw_run.flow.jobs[-1].uuid, load=True)
    assert report["n_iterations"] == N_LOOP_ITERATIONS
    assert report["n_initial_labels"] == N_INITIAL_FRAMES
    assert report["n_dft_labels"] == N_INITIAL_FRAMES + sum(it["n_labelled"] for it in report["iterations"])
    assert report["n_label_failures"] == 0
    # the loop job's stored output follows the replace chain to the final fine-tune output
    loop_uuid = fw_run.flow.jobs[2].jobs[-1].uuid
    finetune = store.get_output(loop_uuid, which="last", load=True)
    assert finetune.n_iterations == N_LOOP_ITERATIONS and finetune.model.sha256 == report["lineage"][1]["sha256"]


def test_no_job_ran_twice(fw_run):
    lp, store = fw_run.lp, fw_run.store
    counts = launch_counts(lp, fw_run.first)
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    # one firework per job, one stored output per job (uuid, index)
    keys = [(d["uuid"], d["index"]) for d in store.query({}, properties=["uuid", "index"])]
    assert len(keys) == len(set(keys)) == len(counts)


def test_loop_created_the_later_iterations_at_run_time(fw_run):
    names = {fw["name"] for fw in fw_run.lp.fireworks.find({}, {"name": 1})}
    submitted = {job.name for job, _ in fw_run.flow.iterflow()}
    created = names - submitted
    # jobs of both iterations exist only because the loop job replaced itself on a launcher
    assert {"pfd train s0 i0", "pfd select s0 i0", "pfd select s1 i1", "pfd test s1 i1"} <= created
    assert any(n.startswith("pfd explore s1 i1") for n in created)


def test_label_jobs_ran_in_parallel_on_both_launchers(fw_run):
    lp = fw_run.lp
    names = {fw["fw_id"]: fw["name"] for fw in lp.fireworks.find({}, {"fw_id": 1, "name": 1})}
    intervals = []
    for fw_id, launches in launches_by_fw(lp).items():
        if is_static_label(names[fw_id]):
            (launch,) = launches
            start = datetime.fromisoformat(launch["time_start"]).timestamp()
            intervals.append((launch["fworker"]["name"], start, start + launch["runtime_secs"]))
    assert len(intervals) == N_INITIAL_FRAMES + 2 * N_LOOP_ITERATIONS
    assert {w for w, _, _ in intervals} == {"cpu", "gpu"}
    overlapping = [(a, b) for a in intervals for b in intervals
                   if a[0] == "cpu" and b[0] == "gpu" and a[1] < b[2] and b[1] < a[2]]
    assert overlapping, f"no two label jobs ran at the same time: {intervals}"


def test_ml_jobs_ran_only_on_the_routed_launcher(fw_run):
    lp = fw_run.lp
    fws = list(lp.fireworks.find({}, {"fw_id": 1, "name": 1, "spec._tasks.job.uuid": 1}))
    names = {fw["fw_id"]: fw["name"] for fw in fws}
    # jobflow's "store_inputs" job keeps the output of a job that a Flow replaced (same uuid): it
    # runs where that job was routed (the teacher's labels: "pfd distill teacher label")
    uuids = {fw["fw_id"]: fw["spec"]["_tasks"][0]["job"]["uuid"] for fw in fws}
    routed = {uuids[i] for i, name in names.items() if is_ml_job(name)}
    ml = {fw_id: launches for fw_id, launches in launches_by_fw(lp).items()
          if is_ml_job(names[fw_id]) or (names[fw_id] == "store_inputs" and uuids[fw_id] in routed)}
    ml_names = {names[i] for i in ml}
    # includes jobs the loop created later (second iteration) and the distillation
    assert {"pfd train s0 i0", "pfd test s1 i1", "pfd distill train student"} <= ml_names
    assert {launch["fworker"]["name"] for launches in ml.values() for launch in launches} == {"gpu"}
    for fw in lp.fireworks.find({}, {"fw_id": 1, "spec._fworker": 1}):
        assert (fw["spec"].get("_fworker") == "gpu") == (fw["fw_id"] in ml), names[fw["fw_id"]]


def test_queries_on_the_store_written_by_launchers(fw_run, server, tmp_path):
    store = fw_run.store
    run = queries.latest_run(store, "Cu")
    assert run["run_uuid"] == fw_run.flow.uuid
    table = queries.iterations(store, "Cu")
    assert [(r["stage"], r["iteration"]) for r in table] == [(0, 0), (1, 1)]
    tests = queries.iteration_tests(store, run["run_uuid"])
    # the report's numbers are those the test jobs stored
    assert [t["n_frames"] for t in tests] == [r["n_labelled"] for r in table]
    assert [t["energy_rmse"] for t in tests] == pytest.approx([r["energy_rmse"] for r in table])
    assert [t["force_rmse"] for t in tests] == pytest.approx([r["force_rmse"] for r in table])
    # the same table straight from pymongo with the aggregation pipeline
    rows = list(server.client()["fw_parallel_out"]["outputs"].aggregate(queries.iterations_pipeline("Cu")))
    assert [(r["iteration"], r["force_rmse"], r["n_labelled"]) for r in rows] == [
        (r["iteration"], r["force_rmse"], r["n_labelled"]) for r in table]

    student = queries.final_model(store, "Cu", "student")
    lineage = {m["role"]: m for m in run["output"]["lineage"]}
    assert student.backend == "deepmd" and student.sha256 == lineage["student"]["sha256"]
    path = student.materialize(tmp_path)
    assert path.stat().st_size == student.size_bytes > 0
    assert queries.final_model(store, "Cu", "teacher").backend == "chgnet"
    with pytest.raises(LookupError):
        queries.latest_run(store, "Si")


def test_latest_run_picks_the_newest_report(fw_run, server):
    """Two more runs for the same formula (documents copied from the real report) and one for
    another formula: ``latest_run`` takes the newest for the formula asked."""
    docs = server.client()["fw_parallel_out"]["outputs"]
    real = docs.find_one({"metadata.pfd_step": "report"}, {"_id": 0})
    older = {**real, "uuid": "older-run", "completed_at": "2000-01-01T00:00:00", "hosts": ["older-flow"],
             "metadata": {**real["metadata"], "pfd_run": "older-flow"}}
    other = {**real, "uuid": "other-run", "completed_at": "2999-01-01T00:00:00", "hosts": ["other-flow"],
             "metadata": {**real["metadata"], "pfd_run": "other-flow"}, "output": {**real["output"], "formula": "Si"}}
    docs.insert_many([older, other])
    try:
        assert queries.latest_run(fw_run.store, "Cu")["uuid"] == real["uuid"]
        # the plain pymongo form of the same query (docs/workflows.md)
        newest = docs.find_one({"metadata.pfd_step": "report", "output.formula": "Cu"}, sort=[("completed_at", -1)])
        assert newest["uuid"] == real["uuid"]
        assert queries.latest_run(fw_run.store, "Si")["run_uuid"] == "other-flow"
    finally:
        docs.delete_many({"uuid": {"$in": ["older-run", "other-run"]}})


def test_object_larger_than_16mb_between_launcher_jobs(server, tmp_path):
    """A >16 MB model written by one FireWorks job is rebuilt by the next one from GridFS."""
    producer = make_big_model(20.0, seed=2)
    consumer = check_big_model(producer.output["model"], producer.output["sha256"])
    lp, store, first, lp_file, _ = submit_to_fireworks(server, tmp_path, "fw_big", Flow([producer, consumer]))
    launcher = start_launcher(tmp_path / "l", lp_file, write_fworker_file(tmp_path / "w.yaml", "any"), until_done=True)
    state = run_workflow(lp, first, [launcher], timeout=300)
    assert state == "COMPLETED", _fizzled_report(lp)
    store.connect()
    assert store.get_output(consumer.uuid) == 20 * 2**20
    files = server.client()["fw_big_out"]["outputs_data.files"]
    assert max(f["length"] for f in files.find({}, {"length": 1})) > 16 * 2**20


def test_routing_needs_a_target_and_name_filters():
    from pfd_atomate.workflows.fireworks import route_jobs

    flow = Flow([make_big_model(0.001)])
    with pytest.raises(ValueError, match="fworker name or a category"):
        route_fireworks(flow)
    with pytest.raises(ValueError, match="sequence"):
        route_jobs(flow, {"_fworker": "gpu"}, "pfd train")  # a bare string is not a list of filters
    with pytest.raises(ValueError, match="empty"):
        route_jobs(flow, {})
