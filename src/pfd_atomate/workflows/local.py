"""Run a PFD flow on this machine with several workers, resumable, from one run folder.

The engine is FireWorks: a LaunchPad and the JobStore live on a SecantusDB server (MongoDB wire
protocol, WiredTiger storage) whose files are in ``<run folder>/db``; ``workers`` ``rlaunch
rapidfire`` processes run the jobs, each single-threaded by default, so the independent jobs
of a PFD iteration (one static job per frame, one MD job per task group) run side by side.
Nothing here schedules jobs: FireWorks does, as on a cluster.

The run folder holds exactly one run:

``<run>/db``          the database (LaunchPad + JobStore: documents, GridFS ``data``)
``<run>/run.json``    which workflow this folder runs (first firework id, flow uuid, settings digest)
``<run>/jobflow.yaml`` the JobStore of the workers, naming the server of the process that holds the
                      folder (the database's port changes each time it is opened)
``<run>/workers/k``   the job folders of worker k (FireWorks ``launcher_*`` folders)
``<run>/training/``   the training jobs' folders, one per job (``PFD_TRAIN_CHECKPOINT_DIR``, unless the
                      settings name another), so that a resumed run continues a lost training from its
                      last checkpoint
``<run>/.pfd.lock``   held while a process works on the folder (see :class:`RunLock`)
``<run>/db.log``, ``<run>/db.pid``  the database server's log and pid. A server left running by a
                      killed process is stopped by the next one that takes the lock, so a
                      resume never waits on it

Calling :func:`run_flow` again on the same folder *resumes*: jobs that finished are kept, a job
that was running when the previous process died (a lost run) is run again, everything else
continues (a lost deepmd-kit training from its last checkpoint). A flow whose settings differ from the stored run's is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from jobflow import Flow, Job, JobStore

from pfd_atomate.process import die_with_parent
from pfd_atomate.workflows.mongo import MongoServer, jobstore_spec, start_server, stop_process

logger = logging.getLogger(__name__)
#: FireWorks' own console handler: its INFO lines ("Performing db tune-up") repeat what the run reports
FIREWORKS_LOG_LEVEL = "WARNING"

LAUNCHPAD_DB = "fireworks"
STORE_DB = "pfd"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LIVE_STATES = ("READY", "RESERVED", "RUNNING")
#: longest wait of run_flow's monitor between two looks at the workflow while no job changes state, s
POLL_BACKOFF_MAX_S = 5.0
#: seconds an idle worker sleeps before it asks for a ready job again (FireWorks' ``rlaunch --sleep``)
WORKER_SLEEP_S = 5


class RunLockedError(RuntimeError):
    """Another process holds the run folder."""


class RunMismatchError(ValueError):
    """The run folder holds another PFD run than the flow given."""


@dataclass
class RunLock:
    """An exclusive lock on a run folder: one writer per run.

    The lock is an ``flock`` on ``<run>/.pfd.lock``, which the kernel releases when its holder
    dies (however it dies), so the lock of a dead process is taken over without a stale-lock
    heuristic. The file names the holder (pid, host, start time) for the error message of a
    second process.
    """

    run_dir: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """The lock file."""
        return Path(self.run_dir) / ".pfd.lock"

    def acquire(self) -> RunLock:
        """Take the lock.

        Raises
        ------
        RunLockedError: another live process holds it (the message names pid, host and start).
        """
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
            os.close(fd)
            info = json.loads(holder) if holder.startswith("{") else {"holder": holder}
            raise RunLockedError(
                f"run folder {self.run_dir} is in use by pid {info.get('pid')} on {info.get('host')} "
                f"since {info.get('started')}; wait for it or stop it"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (the file stays)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def flow_digest(flow: Flow | Job) -> str:
    """SHA-256 of a flow's settings: its JSON with every uuid replaced by its order of appearance.

    Two flows built by the same Makers from the same input have the same digest, whatever uuids
    jobflow drew for them.
    """
    text = json.dumps(flow.as_dict(), sort_keys=True, default=str)
    seen: dict[str, int] = {}
    normalized = _UUID.sub(lambda m: f"uuid{seen.setdefault(m.group(0), len(seen))}", text)
    return hashlib.sha256(normalized.encode()).hexdigest()


@dataclass
class LocalRun:
    """What :func:`run_flow` did.

    Attributes
    ----------
    run_dir: the run folder.
    state: FireWorks workflow state at the end ("COMPLETED", "FIZZLED", ...).
    resumed: the folder held an unfinished run that was continued.
    n_fireworks: jobs in the workflow (the dynamic ones included).
    rerun: names of lost jobs that were run again on resume.
    failed: ``{job name: error}`` of the jobs that failed (tolerated label failures included).
    wall_time_s: wall time of this call, s.
    flow_uuid: uuid of the flow that this folder runs.
    """

    run_dir: Path
    state: str
    resumed: bool
    n_fireworks: int
    rerun: list[str]
    failed: dict[str, str]
    wall_time_s: float
    flow_uuid: str

    @property
    def completed(self) -> bool:
        """Every leaf job finished (failures inside the tolerated ratios are allowed)."""
        return self.state == "COMPLETED"


@contextmanager
def open_run_store(run_dir: str | Path, lock: bool = True) -> Iterator[tuple[JobStore, Any, MongoServer]]:
    """Start the run folder's database and yield ``(JobStore, LaunchPad, server)``; stop it after.

    Parameters
    ----------
    run_dir: the run folder.
    lock: hold :class:`RunLock` meanwhile (reading a finished run while nothing else runs).

    Raises
    ------
    RunLockedError: the folder is in use.
    FileNotFoundError: there is no run in ``run_dir``.
    """
    from pfd_atomate.workflows.fireworks import launchpad, write_launchpad_file

    run_dir = Path(run_dir).resolve()
    if lock and not (run_dir / "db").is_dir():
        raise FileNotFoundError(f"no PFD run in {run_dir} (no db/ folder)")
    with (RunLock(run_dir) if lock else nullcontext(),
          # the lock is held here, so a server still on db/ is a dead process's: pid_file stops it
          start_server(run_dir / "db", log_path=run_dir / "db.log", stop_with_parent=True,
                       pid_file=run_dir / "db.pid") as server):
        # the folder names the server of whoever holds it, so attach_run reaches this one (its port is new)
        write_launchpad_file(run_dir / "my_launchpad.yaml", server.host, server.port, LAUNCHPAD_DB,
                             strm_lvl=FIREWORKS_LOG_LEVEL)
        (run_dir / "jobflow.yaml").write_text(yaml.safe_dump({"JOB_STORE": jobstore_spec(server.host, server.port,
                                                                                          STORE_DB)}))
        store = server.jobstore(STORE_DB)
        store.connect()
        yield store, launchpad(server.host, server.port, name=LAUNCHPAD_DB, strm_lvl=FIREWORKS_LOG_LEVEL), server


@contextmanager
def attach_run(run_dir: str | Path) -> Iterator[tuple[JobStore, Any, dict[str, Any]]]:
    """Read a run folder, running or not: yield ``(JobStore, LaunchPad, run.json record)``.

    A folder another process holds (a run in progress, or a script reading a finished run) is read
    through that process's database server: :func:`open_run_store` names it in the folder's
    ``jobflow.yaml`` and ``my_launchpad.yaml``. Otherwise the folder's database is started here
    (holding the lock meanwhile).

    Raises
    ------
    FileNotFoundError: no run in ``run_dir``.
    RunLockedError: the folder stays held by a process whose server does not answer (10 looks, about a minute).
    """
    from fireworks import LaunchPad

    run_dir = Path(run_dir).resolve()
    record = _read_run_file(run_dir)
    if record is None:
        raise FileNotFoundError(f"no PFD run in {run_dir} (no run.json)")
    for _ in range(10):  # the holder may let go between the lock test and the connection: look again
        try:
            RunLock(run_dir).acquire().release()
        except RunLockedError:
            spec = yaml.safe_load((run_dir / "jobflow.yaml").read_text())["JOB_STORE"]
            if not _answers(spec["docs_store"]):
                time.sleep(1.0)
                continue
        else:  # nobody holds it: start its database here
            with open_run_store(run_dir) as (store, lp, _):
                yield store, lp, record
            return
        store = JobStore.from_dict_spec(spec)
        store.connect()
        try:
            yield store, LaunchPad.from_file(str(run_dir / "my_launchpad.yaml")), record
        finally:
            store.close()
        return
    raise RunLockedError(f"{run_dir} is held by a process whose database server does not answer; see its db.log")


def _answers(store_spec: dict[str, Any]) -> bool:
    """Whether the MongoDB server of a ``MongoStore`` description answers ``ping`` within 5 s."""
    from pymongo import MongoClient

    client = MongoClient(store_spec["host"], int(store_spec["port"]), serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
        return True
    except Exception:  # noqa: BLE001  (any failure means: not there now)
        return False
    finally:
        client.close()


def job_states(lp: Any, record: dict[str, Any],
               known: dict[int, tuple[str, dict[str, Any]]] | None = None) -> dict[int, tuple[str, str, dict[str, Any]]]:
    """``{fw_id: (state, job name, metadata)}`` of every job of the run ``record`` (see :func:`attach_run`).

    The states come from the workflow document (FireWorks keeps ``fw_states`` there), names and metadata
    from the fireworks, which hold the jobs' inputs (150 MB for a multi-phase distillation): a query
    over all of them took the embedded server 1.8 s, every second. ``known`` (``{fw_id: (name,
    metadata)}``, filled here) spares a caller that looks again the fireworks it has seen; a job's name
    and metadata do not change.
    """
    known = {} if known is None else known
    doc = lp.workflows.find_one({"nodes": record["first_fw_id"]}, {"nodes": 1, "fw_states": 1})
    if doc is None:
        raise KeyError(f"no workflow holds firework {record['first_fw_id']}")
    states = {int(fw_id): state for fw_id, state in (doc.get("fw_states") or {}).items()}
    missing = [fw_id for fw_id in doc["nodes"] if fw_id not in known or fw_id not in states]
    if missing:
        for fw in lp.fireworks.find({"fw_id": {"$in": missing}},
                                    {"fw_id": 1, "state": 1, "name": 1, "spec._tasks.job.metadata": 1}):
            tasks = (fw.get("spec") or {}).get("_tasks") or [{}]
            known[fw["fw_id"]] = (fw["name"], ((tasks[0].get("job") or {}).get("metadata")) or {})
            states.setdefault(fw["fw_id"], fw["state"])  # a workflow document without this firework's state
    return {fw_id: (states[fw_id], *known[fw_id]) for fw_id in doc["nodes"] if fw_id in known}


def _read_run_file(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _workflow_fw_ids(lp: Any, first_fw_id: int) -> list[int]:
    doc = lp.workflows.find_one({"nodes": first_fw_id}, {"nodes": 1})
    if doc is None:
        raise KeyError(f"no workflow holds firework {first_fw_id}")
    return list(doc["nodes"])


@dataclass
class RunView:
    """What :func:`run_flow` shows its ``on_progress`` callback.

    Attributes
    ----------
    states: ``{fw_id: (FireWorks state, job name, jobflow metadata)}`` of every job so far.
    store: the run's JobStore (connected).
    flow_uuid: uuid of the flow the folder runs (``metadata.pfd_run`` of its jobs).
    """

    states: dict[int, tuple[str, str, dict[str, Any]]]
    store: JobStore
    flow_uuid: str
    launch_dirs: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, lp: Any, states: dict, store: JobStore, flow_uuid: str) -> RunView:
        """The view of ``states``, with the folders of the running jobs."""
        running = [fw_id for fw_id, (state, _, _) in states.items() if state == "RUNNING"]
        dirs = {d["fw_id"]: d["launch_dir"] for d in lp.launches.find(
            {"fw_id": {"$in": running}, "state": "RUNNING"}, {"fw_id": 1, "launch_dir": 1})} if running else {}
        return cls(states, store, flow_uuid, dirs)


def _failures(lp: Any, fw_ids: list[int]) -> dict[str, str]:
    """``{job name: last lines of its error}`` of the fizzled jobs."""
    out = {}
    for fw in lp.fireworks.find({"fw_id": {"$in": fw_ids}, "state": "FIZZLED"}, {"name": 1, "launches": 1}):
        launch = lp.launches.find_one({"launch_id": {"$in": fw.get("launches") or []}}, {"action": 1}) or {}
        stack = ((launch.get("action") or {}).get("stored_data") or {}).get("_exception", {}).get("_stacktrace", "")
        out[fw["name"]] = "\n".join(str(stack).strip().splitlines()[-3:])
    return out


def run_flow(
    flow: Flow | Job,
    run_dir: str | Path,
    workers: int = 1,
    threads_per_worker: int = 1,
    poll_interval: float = 1.0,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    on_progress: Callable[[RunView], None] | None = None,
    max_poll_interval: float = POLL_BACKOFF_MAX_S,
    worker_sleep: int = WORKER_SLEEP_S,
) -> LocalRun:
    """Run (or resume) ``flow`` in ``run_dir`` with ``workers`` parallel FireWorks workers.

    Parameters
    ----------
    flow: the PFD flow (or any jobflow Flow/Job).
    run_dir: the run folder (created); see the module docstring for its layout.
    workers: number of ``rlaunch`` processes (>= 1); e.g. 2 on a 2-core machine.
    threads_per_worker: ``OMP_NUM_THREADS`` of each worker (torch and CP2K follow it).
    poll_interval: seconds between looks at the workflow after a job changed state; while nothing
        changes the wait doubles up to ``max_poll_interval`` (each look is a query to the server,
        which shares the cores with the jobs).
    timeout: give up (stopping the workers; the run stays resumable) after this many seconds.
    env: extra environment variables for the workers.
    on_progress: called with a :class:`RunView` at every look at the workflow.
    max_poll_interval: longest wait between two looks, seconds (>= ``poll_interval``).
    worker_sleep: seconds an idle worker waits before it asks the server for a ready job again
        (integer, FireWorks' ``rlaunch --sleep``); a worker that finishes a job asks at once.

    Returns
    -------
    LocalRun: the workflow state and what happened.

    Raises
    ------
    ValueError: ``workers < 1``, ``threads_per_worker < 1``, ``worker_sleep < 1`` or
        ``max_poll_interval < poll_interval``.
    RunLockedError: another process works on ``run_dir``.
    RunMismatchError: ``run_dir`` holds a run of other settings.
    TimeoutError: ``timeout`` passed (the run is resumable).
    """
    from pfd_atomate.settings import PFDSettings
    from pfd_atomate.workflows.fireworks import submit_flow, write_fworker_file

    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker),
                        ("worker_sleep", worker_sleep)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0 < poll_interval <= max_poll_interval:
        raise ValueError(f"poll_interval must be > 0 and <= max_poll_interval, got {poll_interval!r} and "
                         f"{max_poll_interval!r}")
    run_dir = Path(run_dir).resolve()
    start = time.perf_counter()
    digest = flow_digest(flow)
    with RunLock(run_dir):
        record = _read_run_file(run_dir)
        if record is not None and record["digest"] != digest:
            raise RunMismatchError(
                f"{run_dir} holds another PFD run (flow {record['flow_uuid']}, other settings or input); "
                "use a new run folder to start this one"
            )
        with open_run_store(run_dir, lock=False) as (store, lp, server):
            rerun: list[str] = []
            if record is None:
                lp.reset("", require_password=False)  # a new database: FireWorks' counters
                # no store in the fireworks: the workers read it from jobflow's settings, which
                # name this server's port of the day (it changes when the run is resumed)
                ids = submit_flow(flow, lp, None)
                record = {"first_fw_id": min(ids.values()), "flow_uuid": flow.uuid, "digest": digest,
                          "created": datetime.now(timezone.utc).isoformat()}
                (run_dir / "run.json").write_text(json.dumps(record, indent=2))
                resumed = False
            else:
                resumed = True
                # we hold the lock: a job still marked running, and any workflow lock, belong to a
                # dead process
                lp.workflows.update_many({"nodes": record["first_fw_id"]}, {"$unset": {"locked": ""}})
                for fw_id, (state, name, _) in job_states(lp, record).items():
                    if state in ("RUNNING", "RESERVED"):
                        lp.rerun_fw(fw_id)
                        rerun.append(name)
                logger.info("resuming %s: %d lost jobs run again", run_dir, len(rerun))
            lp_file, jobflow_file = run_dir / "my_launchpad.yaml", run_dir / "jobflow.yaml"  # open_run_store's
            env = {**(env or {}), "JOBFLOW_CONFIG_FILE": str(jobflow_file)}
            if "PFD_TRAIN_CHECKPOINT_DIR" not in env and PFDSettings().TRAIN_CHECKPOINT_DIR is None:
                # a training lost with its worker continues from its last checkpoint when the run is resumed
                env["PFD_TRAIN_CHECKPOINT_DIR"] = str(run_dir / "training")
            fworker = write_fworker_file(run_dir / "my_fworker.yaml", "local")
            launchers = _start_workers(run_dir, lp_file, fworker, workers, threads_per_worker, env, int(worker_sleep))
            try:
                report = None if on_progress is None else (
                    lambda states: on_progress(RunView.of(lp, states, store, record["flow_uuid"])))
                state = _wait(lp, record, launchers, (poll_interval, max_poll_interval), timeout, report, start)
            finally:
                for process in launchers:
                    stop_process(process)
            fw_ids = _workflow_fw_ids(lp, record["first_fw_id"])
            return LocalRun(run_dir=run_dir, state=state, resumed=resumed, n_fireworks=len(fw_ids), rerun=rerun,
                            failed=_failures(lp, fw_ids), wall_time_s=time.perf_counter() - start,
                            flow_uuid=record["flow_uuid"])


def _start_workers(run_dir: Path, lp_file: Path, fworker: Path, workers: int, threads: int,
                   env: dict[str, str] | None, sleep: int) -> list[subprocess.Popen]:
    bin_dir = Path(sys.executable).parent
    worker_env = dict(os.environ, OMP_NUM_THREADS=str(threads), **(env or {}))
    worker_env["PATH"] = os.pathsep.join((str(bin_dir), worker_env.get("PATH", "")))
    processes = []
    for k in range(workers):
        folder = run_dir / "workers" / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        # --nlaunches infinite: a worker that finds nothing ready while the loop job runs must wait
        cmd = [str(bin_dir / "rlaunch"), "-l", str(lp_file), "-w", str(fworker), "rapidfire",
               "--nlaunches", "infinite", "--sleep", str(sleep)]
        log = open(folder / "rlaunch.log", "ab")  # noqa: SIM115 (the child keeps it)
        processes.append(subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=worker_env,
                                          preexec_fn=die_with_parent(signal.SIGKILL)))
    return processes


def _wait(lp: Any, record: dict[str, Any], launchers: list[subprocess.Popen], polls: tuple[float, float],
          timeout: float | None, on_progress: Callable | None, start: float) -> str:
    """Poll until no job is ready or running; the workflow state then. ``polls``: the shortest and the
    longest wait (s); the wait doubles while no job changes state."""
    from pfd_atomate.workflows.fireworks import workflow_state

    idle_polls = 0
    poll, last = polls[0], None
    known: dict[int, tuple[str, dict[str, Any]]] = {}  # names and metadata, read once per firework
    while True:
        states = job_states(lp, record, known)
        seen = {fw_id: state for fw_id, (state, _, _) in states.items()}
        poll, last = (polls[0] if seen != last else min(2 * poll, polls[1])), seen
        if on_progress is not None:  # every poll: a running job's own progress (training steps) moves too
            on_progress(states)
        live = any(s in _LIVE_STATES for s, _, _ in states.values())
        idle_polls = 0 if live else idle_polls + 1
        if idle_polls >= 2:  # twice: a finishing job may still be adding the jobs it creates
            # nothing can run any more: every leaf completed, or a failure blocks the rest
            return workflow_state(lp, record["first_fw_id"])
        dead = [p.returncode for p in launchers if p.poll() is not None]
        if len(dead) == len(launchers):
            raise RuntimeError(f"every worker exited (exit codes {dead}); see workers/*/rlaunch.log")
        if timeout is not None and time.perf_counter() - start > timeout:
            raise TimeoutError(f"run not finished after {timeout:.0f} s; run again to resume it")
        time.sleep(poll)
