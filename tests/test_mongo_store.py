"""The MongoDB JobStore (documents in MongoStore, ``data`` in GridFS) on a real MongoDB-protocol
server: SecantusDB (WiredTiger storage) started here on a free loopback port.

A model file larger than MongoDB's 16 MB document limit must round-trip through the ``data``
store; the same job against a plain MongoStore for ``data`` must hit the limit (so the test
would notice if GridFS were not used).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import pytest
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MongoStore
from pymongo.errors import BulkWriteError, DocumentTooLarge
from workflow_jobs import check_big_model, make_big_model

from pfd_atomate.store import fetch_model
from pfd_atomate.workflows import jobstore_spec, start_server

BSON_LIMIT = 16 * 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("mongo") / "db")
    yield srv
    srv.stop()


def test_server_refuses_non_loopback_addresses():
    with pytest.raises(ValueError, match="loopback"):
        start_server(host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        start_server(host="192.168.1.10")


def test_server_is_a_real_mongodb_endpoint(server):
    client = server.client()
    hello = client.admin.command("hello")
    assert hello["maxBsonObjectSize"] == BSON_LIMIT
    assert server.host == "127.0.0.1" and server.port > 0
    # the port was free when the server took it: it is listening there now
    assert client.address == (server.host, server.port)


def test_model_larger_than_16mb_round_trips_through_gridfs(server, tmp_path):
    store = server.jobstore("big_model")
    producer = make_big_model(20.0, seed=1)
    consumer = check_big_model(producer.output["model"], producer.output["sha256"])
    run_locally(Flow([producer, consumer]), store=store, root_dir=tmp_path, create_folders=True, ensure_success=True)

    store.connect()
    assert store.get_output(consumer.uuid) == 20 * 2**20  # the next job rebuilt all bytes
    model = fetch_model(store, producer.uuid)
    raw = model.to_bytes()
    assert len(raw) == 20 * 2**20 and hashlib.sha256(raw).hexdigest() == model.sha256

    db = server.client()["big_model"]
    # the job document holds a blob reference only; the base64 file (~27 MB) is chunked in GridFS
    reference = db["outputs"].find_one({"uuid": producer.uuid})["output"]["model"]
    assert reference["store"] == "data" and "content_b64" not in reference
    gridfs_file = db["outputs_data.files"].find_one({"metadata.blob_uuid": reference["blob_uuid"]})
    assert gridfs_file["length"] > BSON_LIMIT
    # zlib (on by default) takes back base64's +33 %: the blob is about the file's own size, not 1.33x
    assert gridfs_file["metadata"]["compression"] == "zlib"
    assert gridfs_file["length"] < 1.05 * 20 * 2**20
    assert db["outputs_data.chunks"].count_documents({"files_id": gridfs_file["_id"]}) > 1


def test_plain_mongostore_for_data_hits_the_document_limit(server, tmp_path):
    """Negative control: without GridFS the same object cannot be stored."""
    spec = jobstore_spec(server.host, server.port, database="no_gridfs")
    docs = MongoStore(**{k: v for k, v in spec["docs_store"].items() if k != "type"})
    data = MongoStore(database="no_gridfs", collection_name="outputs_data", host=server.host, port=server.port)
    store = JobStore(docs, additional_stores={"data": data})
    store.connect()
    job = make_big_model(20.0, seed=1)
    # pymongo refuses it client-side, or the server answers code 17420 within the bulk write
    with pytest.raises((DocumentTooLarge, BulkWriteError)) as err:
        job.run(store)
    if isinstance(err.value, BulkWriteError):
        assert "larger than 16777216" in err.value.details["writeErrors"][0]["errmsg"]


def test_storage_survives_a_server_restart(tmp_path):
    path = tmp_path / "db"
    first = start_server(path)
    first.client()["keep"]["docs"].insert_one({"name": "pfd label s0 i0", "n_labelled": 7})
    first.stop()
    second = start_server(path)
    try:
        assert second.port != 0
        assert second.client()["keep"]["docs"].find_one({"name": "pfd label s0 i0"})["n_labelled"] == 7
    finally:
        second.stop()



def test_a_server_left_running_on_the_folder_is_stopped_and_its_data_kept(tmp_path):
    """A caller that died left its server on the folder (no stop_with_parent here, so it lives on):
    the next start with the pid file stops it instead of waiting out its timeout, and what the old
    server stored is there. A pid file naming another process leaves that process alone."""
    path, pid_file, log = tmp_path / "db", tmp_path / "db.pid", tmp_path / "db.log"
    stale = start_server(path, pid_file=pid_file, log_path=log)
    assert int(pid_file.read_text()) == stale.process.pid
    stale.client()["keep"]["docs"].insert_one({"name": "pfd label s0 i1", "n_labelled": 3})
    began = time.monotonic()
    fresh = start_server(path, pid_file=pid_file, log_path=log, timeout=20)
    try:
        assert stale.process.wait(5) == 0  # SIGTERM: a clean WiredTiger close, not a kill
        assert time.monotonic() - began < 20
        assert int(pid_file.read_text()) == fresh.process.pid != stale.process.pid
        assert fresh.client()["keep"]["docs"].find_one({"name": "pfd label s0 i1"})["n_labelled"] == 3
        lines = log.read_text().splitlines()
        assert f"pid {stale.process.pid} listening" in lines[0] and "stopping on signal 15" in lines[1]
        assert "stopped in" in lines[2] and f"pid {fresh.process.pid} listening" in lines[3]
    finally:
        fresh.stop()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(str(other.pid))
        start_server(path, pid_file=pid_file).stop()
        assert other.poll() is None  # not a server on this folder: untouched
    finally:
        other.kill()
        other.wait()


def test_a_database_held_by_an_unknown_process_fails_with_the_server_log(tmp_path):
    """Without a pid file the holder is not stopped: the error says the database was held and
    quotes WiredTiger's own message (CI shows no log files)."""
    path = tmp_path / "db"
    holder = start_server(path)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)another process held the database for 10 s.*already being managed"):
            start_server(path, timeout=10)
        assert holder.client().admin.command("ping")["ok"] == 1
    finally:
        holder.stop()

def test_jobstore_spec_builds_mongo_and_gridfs_stores(server):
    store = JobStore.from_dict_spec(jobstore_spec(server.host, server.port, database="spec"))
    assert type(store.docs_store).__name__ == "MongoStore"
    assert type(store.additional_stores["data"]).__name__ == "GridFSStore"
    assert store.docs_store.port == server.port == store.additional_stores["data"].port


def test_queries_also_work_on_the_embedded_store(tmp_path):
    """The same queries on montydb (the default store of ``run_locally`` runs): the newest report
    wins, and a running flow's test jobs are found through their metadata."""
    from pfd_atomate import queries
    from pfd_atomate.store import embedded_store

    store = embedded_store(tmp_path)
    store.connect()
    it = {"stage": 0, "iteration": 0, "energy_rmse": 0.01, "force_rmse": 0.1, "n_labelled": 2}

    def report(uuid, flow, when, n):
        return {"uuid": uuid, "index": 1, "name": "pfd report", "hosts": [flow], "completed_at": when,
                "metadata": {"pfd_step": "report", "pfd_run": flow},
                "output": {"formula": "Cu", "iterations": [{**it, "iteration": i} for i in range(n)], "lineage": []}}

    test_job = {"uuid": "t1", "index": 1, "name": "pfd test s0 i0", "hosts": ["iteration-flow", "run-b"],
                "metadata": {"pfd_step": "test", "pfd_run": "run-b", "stage": 0, "iteration": 0},
                "completed_at": "2026-02-01T00:00:00",
                "output": {"converged": True, "metrics": {"energy_rmse": 0.02, "force_rmse": 0.2, "n_frames": 3}}}
    store.docs_store.update([report("a", "run-a", "2026-01-01T00:00:00", 1), report("b", "run-b", "2026-02-01T00:00:00", 2),
                             test_job], key=["uuid", "index"])
    assert queries.latest_run(store, "Cu")["run_uuid"] == "run-b"
    assert [r["iteration"] for r in queries.iterations(store, "Cu")] == [0, 1]
    (row,) = queries.iteration_tests(store, "run-b")
    assert (row["stage"], row["iteration"], row["n_frames"], row["force_rmse"]) == (0, 0, 3, 0.2)
    assert queries.iteration_tests(store, "run-a") == []
    with pytest.raises(LookupError, match="student"):
        queries.model_location(store, "Cu", "student")
