"""Thin helpers to run a PFD flow with jobflow-remote.

- :func:`project_config` / :func:`write_project`: a jobflow-remote project whose queue and
  JobStore live on one MongoDB server (documents in ``MongoStore``, ``data`` in GridFS) with
  local ``shell`` workers, e.g. one for DFT and one for training/MD;
- :func:`route_jobflow_remote`: send job types (default: training, MD, evaluation) to
  another worker / exec_config, including the jobs the fine-tune loop creates later;
- ``python -m pfd_atomate.workflows.jobflow_remote RUN_DIR``: the worker's job command
  (``execution_cmd``). jobflow-remote 1.0's ``jf execution run`` checks every
  ``Response(replace=...)`` with ``get_flow(..., allow_external_references=False)``; the
  fine-tune loop's next iteration reads outputs of jobs that finished earlier (training sets,
  the previous model), so the loop job would end in ``REMOTE_ERROR`` ("The following jobs were
  not found in the jobs array"). This command runs the job the same way with external
  references allowed; the runner resolves them from the JobStore as for any other input.
  Jobs with ``JobConfig(expose_store=True)`` that read other jobs' outputs from
  ``CURRENT_JOB.store`` (the label collector does) would see only the job's own, empty,
  file store on a jobflow-remote worker; this command lets them read the project's JobStore
  for outputs not in the job's own store (the worker must reach the database, as local and
  most cluster workers do). The job's output still goes to its file store and from there,
  through the runner, to the JobStore.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobflow import Flow, Job, JobStore
from jobflow.core.reference import OnMissing

from pfd_atomate.compat.jobflow_remote import remote_run_with_external_references
from pfd_atomate.workflows import ML_JOBS
from pfd_atomate.workflows.mongo import jobstore_spec

logger = logging.getLogger(__name__)

#: runner delays (s) for small flows and tests; jobflow-remote's defaults are 30 s per step, and
#: its runner loop wakes up once a second, so 1 s is the floor
FAST_RUNNER = {"delay_checkout": 1, "delay_check_run_status": 1, "delay_advance_status": 1, "delay_refresh_limited": 5}


def execution_cmd(python: str | Path | None = None) -> str:
    """The worker ``execution_cmd`` that runs PFD jobs (see module docstring)."""
    return f"{python or sys.executable} -m pfd_atomate.workflows.jobflow_remote {{}}"


def local_worker(work_dir: str | Path, pre_run: str | None = None, **kwargs: Any) -> dict:
    """A ``type: local``, ``scheduler_type: shell`` worker running PFD jobs under ``work_dir``.

    ``pre_run`` is shell code run before each job (e.g. ``export OMP_NUM_THREADS=1``);
    ``kwargs`` are other worker fields (``max_jobs``, ``resources``, ...).
    """
    return {
        "type": "local",
        "scheduler_type": "shell",
        "work_dir": str(Path(work_dir).resolve()),
        "execution_cmd": execution_cmd(),
        **({"pre_run": pre_run} if pre_run else {}),
        **kwargs,
    }


def project_config(
    name: str,
    host: str,
    port: int,
    database: str,
    workers: Mapping[str, dict],
    exec_config: Mapping[str, dict] | None = None,
    runner: Mapping[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> dict:
    """A jobflow-remote project (as a dict, the content of ``<name>.yaml``) on one MongoDB server.

    Parameters
    ----------
    name: project name.
    host, port, database: MongoDB server and database of the queue and the JobStore.
    workers: ``{worker name: worker dict}`` (see :func:`local_worker`); the first is the default.
    exec_config: named execution configs (``{"ml": {"export": {"OMP_NUM_THREADS": 1}}}``).
    runner: runner options (``delay_checkout`` ...; :data:`FAST_RUNNER` for tests).
    base_dir: folder of the project's logs and daemon files.

    Raises
    ------
    ValueError: no worker.
    """
    if not workers:
        raise ValueError("a jobflow-remote project needs at least one worker")
    config: dict[str, Any] = {
        "name": name,
        "workers": {k: dict(v) for k, v in workers.items()},
        "queue": {
            "store": {"type": "MongoStore", "host": host, "port": int(port), "database": database,
                      "collection_name": "jobs"},
        },
        "jobstore": jobstore_spec(host=host, port=port, database=database),
    }
    if exec_config:
        config["exec_config"] = {k: dict(v) for k, v in exec_config.items()}
    if runner:
        config["runner"] = dict(runner)
    if base_dir is not None:
        config["base_dir"] = str(Path(base_dir).resolve())
    return config


def write_project(projects_folder: str | Path, config: dict) -> Path:
    """Write ``config`` to ``<projects_folder>/<name>.yaml`` and check that jobflow-remote parses it.

    Raises
    ------
    ValueError: jobflow-remote rejects the configuration.
    """
    from jobflow_remote.config.base import Project
    from monty.serialization import dumpfn

    Project.model_validate(config)  # clear error before anything reads the file
    folder = Path(projects_folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config['name']}.yaml"
    dumpfn(config, path)
    return path


def route_jobflow_remote(
    flow: Flow | Job,
    worker: str | None = None,
    exec_config: str | dict | None = None,
    resources: dict | None = None,
    name_filters: Sequence[str] = ML_JOBS,
) -> Flow | Job:
    """Run matching jobs (default: training, MD, evaluation) on ``worker`` / with ``exec_config``.

    Uses ``jobflow_remote.set_run_config(..., dynamic=True)`` once per name filter, so the jobs
    that ``Response(replace=...)`` creates later (the next fine-tune iteration, the labelling
    fan-out) get the same worker. Jobs that match no filter run on the worker given to
    ``submit_flow``.

    Raises
    ------
    ValueError: nothing to set, or no name filter.
    """
    from jobflow_remote import set_run_config

    if worker is None and exec_config is None and resources is None:
        raise ValueError("give a worker, an exec_config or resources to route to")
    if not name_filters or isinstance(name_filters, str):
        raise ValueError("name_filters must be a non-empty sequence of job-name substrings")
    for name_filter in name_filters:
        set_run_config(flow, name_filter=name_filter, worker=worker, exec_config=exec_config,
                       resources=resources, dynamic=True)
    return flow


class ReadThroughJobStore(JobStore):
    """A job's own JobStore that reads outputs it does not hold from the project's JobStore.

    Writes (the job's output) go to the job's store only. Used on jobflow-remote workers for
    jobs with ``expose_store=True``, see the module docstring.

    Parameters
    ----------
    own: the job's file JobStore written by the jobflow-remote worker.
    project: the project's JobStore (MongoDB).
    """

    def __init__(self, own: JobStore, project: JobStore):
        super().__init__(own.docs_store, own.additional_stores, save=own.save, load=own.load)
        self.project = project

    def connect(self, force_reset: bool = False) -> None:
        """Connect both stores."""
        super().connect(force_reset=force_reset)
        self.project.connect()

    def close(self) -> None:
        """Close both stores."""
        super().close()
        self.project.close()

    def _own(self, uuid: Any) -> bool:
        return not isinstance(uuid, str) or self.docs_store.query_one({"uuid": uuid}, properties=["uuid"]) is not None

    def query_one(self, criteria=None, properties=None, sort=None, load=False):
        """``JobStore.query_one``; a query for another job's uuid is answered by the project store."""
        if not self._own((criteria or {}).get("uuid")):
            return self.project.query_one(criteria, properties, sort=sort, load=load)
        return super().query_one(criteria, properties, sort=sort, load=load)

    def query(self, criteria=None, properties=None, sort=None, skip=0, limit=0, load=False):
        """``JobStore.query`` over the job's own store, then the project store (label reuse looks
        for finished labels of other jobs)."""
        seen = set()
        for store in (super(), self.project):
            for doc in store.query(criteria, properties, sort=sort, skip=skip, limit=limit, load=load):
                key = (doc.get("uuid"), doc.get("index"))
                if key not in seen:
                    seen.add(key)
                    yield doc

    def get_output(self, uuid, which="last", load=False, cache=None, on_missing=OnMissing.ERROR):
        """``JobStore.get_output``, from the project store for outputs of other jobs."""
        store = super() if self._own(uuid) else self.project
        return store.get_output(uuid, which=which, load=load, cache=cache, on_missing=on_missing)


def run_job(run_dir: str | Path = ".") -> None:
    """Run the jobflow-remote job in ``run_dir`` like ``jf execution run`` (see module docstring)."""
    import jobflow_remote.jobs.run as remote_run
    from jobflow_remote import ConfigManager
    from jobflow_remote.jobs.data import IN_FILENAME
    from monty.serialization import loadfn

    def load_input(filename, *args, **kwargs):
        data = loadfn(filename, *args, **kwargs)
        job = data.get("job") if filename == IN_FILENAME and isinstance(data, dict) else None
        if job is not None and getattr(job, "config", None) is not None and job.config.expose_store:
            try:  # the JobStore of the current project (``JFREMOTE_PROJECT``)
                project = ConfigManager().get_project().get_jobstore()
            except Exception as err:  # noqa: BLE001  (no project here: keep jobflow-remote's behaviour)
                logger.warning("no jobflow-remote project on this worker (%s): the job reads only its own store", err)
            else:
                data["store"] = ReadThroughJobStore(data["store"], project)
        return data

    with remote_run_with_external_references(load_input):  # pfd_atomate.compat.jobflow_remote
        remote_run.run_remote_job(str(run_dir))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pfd_atomate.workflows.jobflow_remote RUN_DIR")
    run_job(sys.argv[1])
