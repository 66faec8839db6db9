"""The MongoDB queries users run on a PFD JobStore.

Every job of a PFD run writes one document to the JobStore's docs collection (``outputs`` by
default) with ``uuid``, ``index``, ``name``, ``hosts`` (uuids of the flows holding the job,
innermost first), ``completed_at`` (ISO time), ``metadata`` and ``output``. Model files and
datasets are in the ``data`` store (GridFS on MongoDB) and appear in ``output`` as references
that ``JobStore.get_output(..., load=True)`` follows. Every PFD job carries jobflow metadata
(docs/design.md), which plain queries select on:

- ``metadata.pfd_run``: the uuid of the PFD flow the job belongs to (dynamic jobs included);
- ``metadata.pfd_step``: perturb, label, train, explore, select, test, decide, distill, report;
- ``metadata.stage`` and ``metadata.iteration`` for the jobs of a fine-tune iteration;
- ``metadata.distill_step`` for the distillation's own jobs: teacher model, explore, perturb, select,
  teacher label, split, train student, test vs teacher, check compression, test vs DFT, gather.

So ``{"metadata.pfd_step": "report"}`` finds the run reports (``output`` is a
:class:`~pfd_atomate.schemas.PFDOutput`), and ``{"metadata.pfd_step": "test",
"metadata.pfd_run": run}`` the test of M_i on D_i of each iteration (``output.metrics``), stored
as soon as the iteration ends, so also for a running flow.

The functions below work on any jobflow ``JobStore`` (MongoDB, or the embedded montydb store);
:func:`iterations_pipeline` is the same iteration table as a MongoDB aggregation pipeline for
``pymongo``/``mongosh`` (see docs/workflows.md).
"""

from __future__ import annotations

from typing import Any

from jobflow import JobStore

from pfd_atomate.data import Dataset, ModelFile
from pfd_atomate.store import fetch_dataset, fetch_model

#: jobflow metadata of a run's report job and of an iteration's test job
REPORT = {"metadata.pfd_step": "report"}
TEST = {"metadata.pfd_step": "test"}
#: a labelling's gather job (its output is a LabelOutput); the distillation's teacher labels are "distill"
LABEL = {"metadata.pfd_step": "label", "output.n_requested": {"$exists": True}}
#: the parts of a distillation (``metadata.distill_step``), each job tagged by ``DistillMaker``
DISTILL_STEPS = ("teacher model", "explore", "perturb", "select", "teacher label", "split", "train student",
                 "test vs teacher", "check compression", "test vs DFT", "gather")

_ITERATION_FIELDS = (
    "stage", "iteration", "energy_rmse", "force_rmse", "accurate_ratio", "n_selected_per_structure", "n_labelled",
    "n_label_failures", "n_train_frames", "n_added", "converged", "trained", "model_sha256",
)


def latest_run(store: JobStore, formula: str) -> dict[str, Any]:
    """The newest finished PFD run for ``formula``: its report document.

    Parameters
    ----------
    store: the run's JobStore.
    formula: reduced formula of the input structures as the report writes it ("Cu", "Si",
        several structures: "-"-joined sorted formulas, e.g. "GaN-Si").

    Returns
    -------
    dict: ``uuid`` (report job), ``run_uuid`` (the PFD flow), ``completed_at`` (ISO time) and
        ``output`` (the :class:`~pfd_atomate.schemas.PFDOutput` as a dict).

    Raises
    ------
    LookupError: no finished run for ``formula`` in the store.
    """
    store.connect()
    doc = store.query_one({**REPORT, "output.formula": formula}, sort={"completed_at": -1}, load=False,
                          properties=["uuid", "hosts", "metadata", "completed_at", "output"])
    if doc is None:
        raise LookupError(f"no finished PFD run for formula {formula!r} in the store")
    return {"uuid": doc["uuid"], "run_uuid": (doc.get("metadata") or {}).get("pfd_run") or (doc.get("hosts") or [None])[0],
            "completed_at": doc["completed_at"], "output": doc["output"]}


def run_report(store: JobStore, run_uuid: str) -> dict[str, Any]:
    """The report (:class:`~pfd_atomate.schemas.PFDOutput` as a dict, references resolved) of run ``run_uuid``.

    Raises
    ------
    LookupError: the run has no report (yet).
    """
    store.connect()
    doc = store.query_one({**REPORT, "metadata.pfd_run": run_uuid}, properties=["uuid"])
    if doc is None:
        raise LookupError(f"PFD run {run_uuid} has no report in the store (not finished?)")
    return store.get_output(doc["uuid"], load=True)


def iterations(store: JobStore, formula: str) -> list[dict[str, Any]]:
    """Every fine-tune iteration of the latest run for ``formula``, in order.

    Returns
    -------
    list of dict: per iteration ``stage``, ``iteration``, ``energy_rmse`` (eV/atom),
        ``force_rmse`` (eV/Å), ``accurate_ratio``, ``n_labelled`` (DFT labels spent),
        ``n_label_failures``, ``n_train_frames``, ``n_added``, ``converged``, ``trained``,
        ``model_sha256``.

    Raises
    ------
    LookupError: no finished run for ``formula``.
    """
    report = latest_run(store, formula)["output"]
    return [{k: it.get(k) for k in _ITERATION_FIELDS} for it in report["iterations"]]


def iteration_tests(store: JobStore, run_uuid: str) -> list[dict[str, Any]]:
    """The iteration tests stored so far by run ``run_uuid`` (works while the run goes on).

    Parameters
    ----------
    run_uuid: uuid of the PFD flow (``latest_run(...)["run_uuid"]``, or ``flow.uuid``).

    Returns
    -------
    list of dict, sorted by iteration: ``stage``, ``iteration``, ``energy_rmse`` (eV/atom),
        ``force_rmse`` (eV/Å), ``accurate_ratio``, ``n_frames`` (labelled frames tested = DFT
        labels of the iteration), ``converged``, ``job_uuid``.
    """
    store.connect()
    criteria = {**TEST, "metadata.pfd_run": run_uuid}
    rows = []
    for doc in store.query(criteria, properties=["uuid", "metadata", "output.metrics", "output.converged"]):
        stage, iteration = doc["metadata"]["stage"], doc["metadata"]["iteration"]
        metrics = doc["output"]["metrics"]
        rows.append({
            "stage": stage, "iteration": iteration, "energy_rmse": metrics["energy_rmse"],
            "force_rmse": metrics["force_rmse"], "accurate_ratio": metrics.get("accurate_ratio"),
            "n_frames": metrics["n_frames"], "converged": doc["output"].get("converged"), "job_uuid": doc["uuid"],
        })
    return sorted(rows, key=lambda r: r["iteration"])


def label_jobs(store: JobStore, run_uuid: str) -> list[dict[str, Any]]:
    """The DFT labellings of run ``run_uuid`` so far (the initial labels, then one per iteration), oldest first.

    Returns
    -------
    list of dict: ``uuid`` of the labelling's gather job and its ``output`` counts: ``n_requested``,
        ``n_labelled`` (labels held, reused ones included), ``n_reused`` (found in the store, not paid
        again), ``n_failed`` (frames the labeller dropped).
    """
    store.connect()
    fields = ("n_requested", "n_labelled", "n_reused")
    docs = store.query({**LABEL, "metadata.pfd_run": run_uuid}, sort={"completed_at": 1},
                       properties=["uuid", "output.failed", *(f"output.{f}" for f in fields)])
    return [{"uuid": d["uuid"], "output": {**{f: d["output"].get(f, 0) for f in fields},
                                           "n_failed": len(d["output"].get("failed") or [])}} for d in docs]


def dft_labels(store: JobStore, run_uuid: str) -> Dataset:
    """Every DFT-labelled frame of run ``run_uuid``, each once, in the order they were labelled.

    What a rerun must never pay for again: model weights are large and kept apart, but these frames
    rebuild the run's teacher (a fine-tune on them) and can be written anywhere
    (``Dataset.model_dump_json``). A frame reused by a later labelling is kept once.
    """
    seen: set[str] = set()
    frames = []
    for doc in label_jobs(store, run_uuid):
        for frame in fetch_dataset(store, doc["uuid"]).frames:
            key = frame.fingerprint()
            if key not in seen:
                seen.add(key)
                frames.append(frame)
    return Dataset(frames=frames, name=f"dft-labels:{run_uuid}")


def distill_job(store: JobStore, step: str, run_uuid: str | None = None) -> str:
    """The uuid of the distillation job that does ``step`` (e.g. "teacher label": its output is the
    teacher-labelled frames; "split": their ``train_indices`` / ``test_indices``; "train student").

    Parameters
    ----------
    step: one of :data:`DISTILL_STEPS` but "explore" (one job per MD task).
    run_uuid: the PFD run (``metadata.pfd_run``); None: the store must hold one distillation
        (e.g. a ``DistillMaker`` flow run on its own).

    Raises
    ------
    ValueError: ``step`` is not a single-job step of :data:`DISTILL_STEPS`.
    LookupError: not exactly one such job in the store (or in the run).
    """
    allowed = [s for s in DISTILL_STEPS if s != "explore"]
    if step not in allowed:
        raise ValueError(f"step must be one of {allowed}, got {step!r}")
    store.connect()
    criteria = {"metadata.pfd_step": "distill", "metadata.distill_step": step}
    if run_uuid is not None:
        criteria["metadata.pfd_run"] = run_uuid
    found = {d["uuid"] for d in store.query(criteria, properties=["uuid"])}  # a replaced job keeps its uuid
    if len(found) != 1:
        where = "the store" if run_uuid is None else f"run {run_uuid}"
        raise LookupError(f"expected one distillation job doing {step!r} in {where}, found {len(found)}")
    return found.pop()


def model_location(store: JobStore, formula: str, role: str = "student") -> dict[str, Any]:
    """Where the latest run for ``formula`` stored its ``role`` model ("student" or "teacher").

    Returns
    -------
    dict: ``job_uuid``, ``field``, ``sha256`` (from the report's lineage).

    Raises
    ------
    LookupError: no finished run, or the run has no such model (e.g. no distillation).
    """
    report = latest_run(store, formula)["output"]
    for entry in report.get("lineage", []):
        if entry.get("role") == role and entry.get("location"):
            return dict(entry["location"])
    raise LookupError(f"the latest PFD run for {formula!r} has no stored {role} model")


def final_model(store: JobStore, formula: str, role: str = "student") -> ModelFile:
    """The final ``role`` model file ("student" or "teacher") of the latest run for ``formula``.

    The bytes come out of the ``data`` store (GridFS) and are checked against the SHA-256 the
    report recorded; write them with :meth:`ModelFile.materialize`.

    Raises
    ------
    LookupError: no finished run or no such model.
    ValueError: the stored file does not match the recorded SHA-256.
    """
    location = model_location(store, formula, role)
    model = fetch_model(store, location["job_uuid"], location.get("field", "model"))
    if location.get("sha256") and model.sha256 != location["sha256"]:
        raise ValueError(f"stored {role} model {model.sha256[:12]} != recorded {location['sha256'][:12]}")
    model.to_bytes()  # verifies the content against its own digest
    return model


def iterations_pipeline(formula: str) -> list[dict[str, Any]]:
    """MongoDB aggregation pipeline for the iteration table of the latest run for ``formula``.

    Run it on the docs collection: ``db.outputs.aggregate(iterations_pipeline("Cu"))``; each
    result has the fields of :func:`iterations` plus ``run_uuid`` and ``completed_at``.
    """
    return [
        {"$match": {**REPORT, "output.formula": formula}},
        {"$sort": {"completed_at": -1}},
        {"$limit": 1},
        {"$unwind": "$output.iterations"},
        {"$project": {
            "_id": 0,
            "run_uuid": "$metadata.pfd_run",
            "completed_at": 1,
            **{k: f"$output.iterations.{k}" for k in _ITERATION_FIELDS},
        }},
        {"$sort": {"iteration": 1}},
    ]
