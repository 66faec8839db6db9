"""Thin helpers to run a PFD flow on FireWorks.

A PFD flow is an ordinary jobflow Flow and runs through jobflow's FireWorks manager, with one
fix: the fine-tune loop replaces itself (``Response(replace=...)``) with an iteration whose jobs
read outputs of jobs that finished earlier (the training sets, the previous model). Those are
*external references* of the replacement, and jobflow 0.4's ``JobFiretask`` converts every
replacement with ``allow_external_references=False``, so the loop job fizzles with "The following
jobs were not found in the jobs array". :class:`DynamicJobFiretask` runs the job exactly like
``JobFiretask`` but converts dynamic responses with external references allowed (they point
to ancestors, which are complete; the launcher resolves them from the JobStore). It also
writes the job with monty's JSON encoder: FireWorks' own serializer turns pydantic objects
nested in a bound-method job (e.g. ``SelectMaker.frame_filter``) into strings.
What this module gives:

- :func:`flow_to_workflow`: jobflow's conversion, with :class:`DynamicJobFiretask` tasks;
- :func:`route_fireworks`: pin job types (e.g. training and MD) to a FireWorks worker or
  category, for the jobs in the flow now *and* for those the loop creates later;
- :func:`submit_flow`: :func:`flow_to_workflow` + ``LaunchPad.add_wf`` with the MongoDB JobStore;
- :func:`write_launchpad_file` / :func:`write_fworker_file`: the YAML files ``rlaunch`` and
  ``lpad`` read (``-l my_launchpad.yaml -w my_fworker.yaml``);
- :func:`workflow_state`, :func:`launch_counts`: what the tests and docs check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireworks import explicit_serialize
from fireworks.utilities.fw_serializers import recursive_serialize, serialize_fw
from jobflow import Flow, Job, JobStore
from jobflow.managers.fireworks import JobFiretask
from jobflow.managers.fireworks import flow_to_workflow as jobflow_flow_to_workflow

from pfd_atomate.compat.jobflow import external_references_in_responses
from pfd_atomate.workflows import ML_JOBS

if TYPE_CHECKING:
    from fireworks import LaunchPad, Workflow


@explicit_serialize
class DynamicJobFiretask(JobFiretask):
    """jobflow's ``JobFiretask`` whose dynamic responses may reference finished jobs.

    Runs the job as ``JobFiretask`` does; the Flows of ``Response(replace/addition/detour)``
    become FireWorks detours/additions through :func:`flow_to_workflow` with
    ``allow_external_references=True``, so they are made of this class again.
    """

    def run_task(self, fw_spec):
        """Run the job (see ``JobFiretask.run_task``), external references allowed in its response."""

        with external_references_in_responses(partial(flow_to_workflow, allow_external_references=True)):
            return super().run_task(fw_spec)

    @serialize_fw
    @recursive_serialize
    def to_dict(self):
        """The task as FireWorks stores it, with the job fully JSON-encoded (see module docstring)."""
        from monty.json import MontyEncoder

        task = dict(self)
        if isinstance(task.get("job"), Job):
            task["job"] = json.loads(json.dumps(task["job"], cls=MontyEncoder))
        return task


def flow_to_workflow(
    flow: Flow | Job | list[Job], store: JobStore | None = None, allow_external_references: bool = False, **kwargs: Any
) -> Workflow:
    """Convert a Flow to a FireWorks Workflow whose fireworks run :class:`DynamicJobFiretask`.

    Same arguments and spec as ``jobflow.managers.fireworks.flow_to_workflow`` (each firework's
    spec gets the job's ``config.manager_config``, e.g. ``_fworker``/``_category``).

    Raises
    ------
    ValueError: a job references a job outside ``flow`` and ``allow_external_references`` is False.
    """
    # jobflow's, bound at import: compat.jobflow swaps the module's name for this function while a job runs
    workflow = jobflow_flow_to_workflow(flow, store, allow_external_references, **kwargs)
    for fw in workflow.fws:
        fw.tasks = [DynamicJobFiretask(job=task["job"], store=store) for task in fw.tasks]
    return workflow


def route_jobs(flow: Flow | Job, manager_config: dict[str, Any], name_filters: Sequence[str] = ML_JOBS) -> Flow | Job:
    """Merge ``manager_config`` keys into the config of jobs whose name contains a filter.

    The update is *dynamic*: jobflow keeps it on every job and re-applies it to the jobs a
    job creates with ``Response(replace=...)``, so the training/MD jobs of later fine-tune
    iterations and the static jobs of each labelling fan-out are routed too. Keys already in a
    job's ``manager_config`` that are not named here are kept.

    Parameters
    ----------
    flow: the PFD flow (modified in place).
    manager_config: keys for the manager, e.g. ``{"_fworker": "gpu"}`` (FireWorks).
    name_filters: substrings of job names, see :data:`pfd_atomate.workflows.ML_JOBS`.

    Returns
    -------
    The same flow.

    Raises
    ------
    ValueError: empty ``manager_config`` or ``name_filters``.
    """
    if not manager_config:
        raise ValueError("manager_config is empty: nothing to route")
    if not name_filters or isinstance(name_filters, str):
        raise ValueError("name_filters must be a non-empty sequence of job-name substrings")
    update = {"_set": {f"manager_config->{key}": value for key, value in manager_config.items()}}
    for name_filter in name_filters:
        flow.update_config(update, name_filter=name_filter, dict_mod=True, dynamic=True)
    return flow


def route_fireworks(
    flow: Flow | Job,
    fworker: str | None = None,
    category: str | None = None,
    name_filters: Sequence[str] = ML_JOBS,
) -> Flow | Job:
    """Send matching jobs (default: training, MD, evaluation) to one FireWorks worker or category.

    ``fworker`` sets ``spec._fworker``: only the launcher whose FWorker has that name runs them,
    while un-pinned jobs (labels, ...) still run on any launcher. ``category`` sets
    ``spec._category``: launchers whose FWorker ``category`` names it run them (a launcher
    with no category runs every category).

    Raises
    ------
    ValueError: neither ``fworker`` nor ``category`` given.
    """
    config = {k: v for k, v in (("_fworker", fworker), ("_category", category)) if v is not None}
    if not config:
        raise ValueError("give an fworker name or a category to route to")
    return route_jobs(flow, config, name_filters)


def launchpad(host: str = "127.0.0.1", port: int = 27017, name: str = "fireworks", **kwargs: Any) -> LaunchPad:
    """A FireWorks ``LaunchPad`` on a MongoDB server (``name`` is the database)."""
    from fireworks import LaunchPad

    return LaunchPad(host=host, port=int(port), name=name, **kwargs)


def write_launchpad_file(path: str | Path, host: str, port: int, name: str = "fireworks", **kwargs: Any) -> Path:
    """Write ``my_launchpad.yaml`` for ``rlaunch -l`` / ``lpad -l``; returns the path."""
    launchpad(host, port, name, **kwargs).to_file(str(path))
    return Path(path)


def write_fworker_file(
    path: str | Path, name: str, category: str | Sequence[str] = "", env: dict | None = None
) -> Path:
    """Write ``my_fworker.yaml`` for ``rlaunch -w``; returns the path.

    Parameters
    ----------
    name: the worker's name (what ``_fworker`` pins to).
    category: category or categories this worker accepts ("" = all; ``"__none__"`` = only
        jobs without a category).
    env: ``FWorker.env`` values available to jobs.
    """
    from fireworks import FWorker

    category = category if isinstance(category, str) else list(category)
    FWorker(name=name, category=category, env=env or {}).to_file(str(path))
    return Path(path)


def submit_flow(flow: Flow | Job, lp: LaunchPad, store: JobStore | None, **kwargs: Any) -> dict[int, int]:
    """Convert ``flow`` to a FireWorks Workflow with ``store`` as its JobStore and add it to ``lp``.

    ``store=None`` leaves the store out of the fireworks: each worker then uses jobflow's
    ``JOB_STORE`` setting (``jobflow.yaml`` / ``JOBFLOW_CONFIG_FILE``).

    Returns
    -------
    dict: ``LaunchPad.add_wf``'s mapping of temporary to database firework ids.
    """
    return lp.add_wf(flow_to_workflow(flow, store=store, **kwargs))


def workflow_state(lp: LaunchPad, fw_id: int) -> str:
    """State of the workflow that holds firework ``fw_id`` (READY, RUNNING, COMPLETED, FIZZLED, ...)."""
    doc = lp.workflows.find_one({"nodes": fw_id}, {"state": 1})
    if doc is None:
        raise KeyError(f"no workflow holds firework {fw_id}")
    return doc["state"]


def launch_counts(lp: LaunchPad, fw_id: int) -> dict[int, int]:
    """``{fw_id: number of launches}`` (current + archived) of every firework in ``fw_id``'s workflow.

    A job that ran once has 1; a job rerun after a lost or fizzled run has more.
    """
    nodes = lp.workflows.find_one({"nodes": fw_id}, {"nodes": 1})["nodes"]
    return {fw["fw_id"]: len(fw.get("launches") or []) + len(fw.get("archived_launches") or [])
            for fw in lp.fireworks.find({"fw_id": {"$in": nodes}}, {"fw_id": 1, "launches": 1, "archived_launches": 1})}
