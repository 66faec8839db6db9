"""Jobs of the Label step: label reuse, one guarded atomate2 static job per frame, then a collector.

The frames to label usually come from an earlier job (known only at run time), so
:func:`label_frames` fans out dynamically with ``Response(replace=...)``, after looking up the
JobStore for labels it can reuse (:mod:`pfd_atomate.label.cache`). Each remaining frame gets a
*guarded* static job: it runs atomate2's static job in-process and turns an exception into a
recorded reason, so a failed label drops one frame under every manager instead of failing the
workflow, and the reason (SCF, custodian, missing pseudopotentials...) is kept. The collector
resolves its references itself, as plain JSON data: jobflow would otherwise rebuild every whole
task document (slow, and it breaks when the worker's document classes differ from the ones that
wrote them); it still runs when a guard job itself was lost (``OnMissing.NONE``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobflow import CURRENT_JOB, Flow, Job, JobConfig, Maker, OnMissing, Response, job
from jobflow.core.reference import OutputReference

from pfd_atomate.data import Dataset, Frame, as_dataset
from pfd_atomate.label.adapters import (
    LabelError,
    code_of_maker,
    labels_from_fields,
    task_doc_fields,
)
from pfd_atomate.label.cache import METADATA_KEY, find_labels, label_key, labeller_key
from pfd_atomate.label.kpoints import MeshReference, pinned_makers
from pfd_atomate.label.schemas import FailedLabel, LabelOutput

logger = logging.getLogger(__name__)


def check_frames(frames: Dataset) -> None:
    """Reject input that cannot be labelled, before any job is created.

    A :class:`Frame` is validated on construction (atoms, element symbols, finite arrays); this
    adds what a labeller needs beyond that.

    Raises
    ------
    ValueError: empty dataset, or a singular cell (periodic labellers need a cell volume).
    """
    if len(frames) == 0:
        raise ValueError("nothing to label: the input dataset has no frames")
    for i, frame in enumerate(frames):
        if frame.volume < 1e-8:
            raise ValueError(f"frame {i} has a singular cell (volume {frame.volume:.3g} Å^3)")


def describe_labeller(static_maker: Maker) -> str:
    """Readable labeller name: maker class, job name and, for force fields, the calculator."""
    text = f"{type(static_maker).__name__}({static_maker.name!r}"
    calc = getattr(static_maker, "ase_calculator_name", None)
    return f"{text}, {calc})" if calc else f"{text})"


def check_batching(static_maker: Maker, batch_size: int | None) -> None:
    """Raise ``ValueError`` for a ``batch_size`` given to a maker whose ``make`` takes one structure.

    Only atomate2's force-field makers take a list of structures.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    if batch_size is not None and not isinstance(static_maker, ForceFieldRelaxMaker):
        raise ValueError(f"{type(static_maker).__name__} labels one structure per job; use batch_size=None")


def _guarded(static_maker: Maker, structure: Any) -> dict[str, Any]:
    """Run the atomate2 static job of ``static_maker`` on ``structure`` inside this job.

    Returns ``{"task_document": <the static job's output>, "error": None}``, or
    ``{"task_document": None, "error": "<exception type>: <message, first lines>"}`` when the job
    raised (an SCF that did not converge, a custodian error, a missing pseudopotential, ...):
    a failed label is then one frame dropped for a stated reason, under every manager, not a
    failed workflow. ``structure`` is a list of structures for makers that label batches.

    A rerun of this job (its worker died after the output was stored, before the manager
    recorded the end) returns the stored output instead of computing the label again.
    """
    import traceback

    from jobflow import JobStore
    from maggma.stores import MemoryStore

    outer, store = CURRENT_JOB.job, CURRENT_JOB.store
    if store is not None:
        done = store.query_one({"uuid": outer.uuid, "output": {"$ne": None}}, properties=["output"], load=True)
        if done is not None and isinstance(done.get("output"), dict) and "task_document" in done["output"]:
            logger.info("%s: label found in the store (an earlier run of this job), not computed again", outer.name)
            return done["output"]
    static_job = static_maker.make(structure)
    # the static job's output becomes this job's (stored once, by the manager): it runs against a scratch store
    scratch = JobStore(MemoryStore(), additional_stores={
        name: MemoryStore() for name in getattr(store, "additional_stores", {}) or {"data": None}})
    scratch.connect()
    try:
        response = static_job.run(scratch, job_dir=Path.cwd())
    except Exception as err:  # noqa: BLE001 - every failure of a label is recorded, none is fatal
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        logger.warning("static job %s failed: %s", static_job.name, text.splitlines()[0] if text else err)
        return {"task_document": None, "error": "\n".join(text.splitlines()[:_REASON_LINES])}
    finally:
        CURRENT_JOB.job, CURRENT_JOB.store = outer, store
    if response.replace is not None or response.addition is not None or response.detour is not None:
        return {"task_document": None, "error": f"{static_job.name} asked to change the workflow (unsupported)"}
    return {"task_document": response.output, "error": None}


#: lines of a failed static job's exception kept as the reason of its dropped frame
_REASON_LINES = 6


def guarded_static_job(static_maker: Maker, structure: Any, name_prefix: str, label: str,
                       label_keys: Sequence[str | None] = ()) -> Job:
    """A job that runs ``static_maker``'s atomate2 job on ``structure`` and survives its failure.

    The job takes the static job's name (prefixed), its ``data`` settings (its big objects go to
    the JobStore's ``data`` store) and its manager settings; ``label_keys`` (one per structure)
    go to its metadata for label reuse (:mod:`pfd_atomate.label.cache`).
    """
    template = static_maker.make(structure)  # not run: tells the static job's name and settings
    kwargs = dict(template._kwargs)
    if isinstance(structure, list):
        # a batch's task documents are one object in the data store (GridFS): in the documents
        # collection, 800 of them (8 kB each) slowed every query of the demo's store 15x, and 200
        # of 64 atoms near MongoDB's 16 MB document limit
        kwargs["data"] = True
    guard = Job(_guarded, function_args=(static_maker, structure), name=f"{name_prefix} {template.name} {label}",
                **kwargs)
    guard.config = JobConfig(expose_store=True, manager_config=dict(template.config.manager_config))
    if label_keys and all(label_keys):
        guard.metadata[METADATA_KEY] = list(label_keys)
    return guard


def build_label_flow(
    frames: Dataset,
    static_maker: Maker,
    min_success_ratio: float = 0.9,
    batch_size: int | None = None,
    name_prefix: str = "pfd label",
    reused: dict[int, Frame] | None = None,
    label_keys: Sequence[str] | None = None,
    kpoint_references: Sequence[MeshReference] = (),
) -> Flow:
    """Static jobs for ``frames`` (those not ``reused``) plus the collector, as a Flow whose output is the collector's.

    Parameters
    ----------
    frames: frames to label (existing labels are ignored).
    static_maker: atomate2 static maker (VASP, CP2K, force field) run on each frame.
    min_success_ratio: the collector fails below this fraction of labelled frames.
    batch_size: frames per static job for makers that accept a list of structures;
        ``None``: one job per frame.
    name_prefix: prefix of the job names.
    reused: ``{frame index: labelled frame}`` of labels found in the store (no static job).
    label_keys: label key of each frame (:func:`pfd_atomate.label.cache.label_key`).
    kpoint_references: meshes of the input structures, kept for the frames derived from them
        (:func:`pfd_atomate.label.kpoints.pinned_makers`); empty: each frame's own mesh.

    Returns
    -------
    Flow: output is a :class:`LabelOutput` reference.

    Raises
    ------
    ValueError: bad frames (see :func:`check_frames`), unsupported maker, or batching a
        maker that takes one structure per job.
    """
    check_frames(frames)
    code = code_of_maker(static_maker)
    check_batching(static_maker, batch_size)
    reused = reused or {}
    keys = list(label_keys) if label_keys is not None else [None] * len(frames)
    todo = [i for i in range(len(frames)) if i not in reused]
    makers = pinned_makers(static_maker, frames.frames, kpoint_references)
    size = batch_size or 1
    static_jobs: list[Job] = []
    entries: list[dict[str, Any]] = [
        {"index": i, "job_uuid": None, "source": frames[i].source, "key": keys[i], "reused": reused[i].model_dump()}
        for i in sorted(reused)
    ]
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        structures = [frames[i].to_structure() for i in chunk]
        label = f"{chunk[0]}" if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}"
        # batches come from force-field makers only (check_batching), which have no k-points to pin
        guard = guarded_static_job(makers[chunk[0]], structures if batch_size else structures[0], name_prefix,
                                   label, [keys[i] for i in chunk])
        static_jobs.append(guard)
        documents = guard.output["task_document"]
        for k, i in enumerate(chunk):
            entries.append(
                {
                    "index": i,
                    "job_uuid": guard.uuid,
                    "formula": structures[k].composition.formula,
                    "source": frames[i].source,
                    "key": keys[i],
                    # a batch job returns a list of task documents
                    "fields": task_doc_fields(documents[k] if batch_size else documents),
                    "error": guard.output["error"],
                }
            )
    collect = collect_labels(
        entries,
        code=code,
        labeller=describe_labeller(static_maker),
        min_success_ratio=min_success_ratio,
        name=f"{frames.name}:labelled" if frames.name else "labelled",
    )
    collect.name = f"{name_prefix} collect"
    # run even when static jobs failed (their references resolve to None); the collector
    # resolves the references itself without rebuilding task-document objects
    collect.config = JobConfig(resolve_references=False, on_missing_references=OnMissing.NONE, expose_store=True)
    return Flow([*static_jobs, collect], output=collect.output, name=name_prefix)


# no output_schema: jobflow's replace machinery stores a reference to the collector's
# output under this job's uuid, which a schema would reject
@job(config=JobConfig(expose_store=True))
def label_frames(
    frames: Dataset,
    static_maker: Maker,
    min_success_ratio: float = 0.9,
    batch_size: int | None = None,
    name_prefix: str = "pfd label",
    reuse_labels: bool = True,
    kpoint_references: Sequence[MeshReference] = (),
) -> Response:
    """Fan out: replace this job by one static job per frame not yet labelled, and the collector.

    Parameters are those of :func:`build_label_flow`; ``frames`` is usually the resolved
    output of an earlier job. With ``reuse_labels`` the JobStore is searched first for labels of
    the same frames by the same labeller settings (:mod:`pfd_atomate.label.cache`); those
    frames get no static job.

    Raises
    ------
    ValueError: empty or invalid frames (before any static job is created).
    """
    dataset = as_dataset(frames)
    if dataset is None:
        raise ValueError("nothing to label: the input dataset is None (did the upstream job fail?)")
    # a frame's labeller is the static Maker with that frame's k-point mesh fixed (when one is pinned)
    references = [MeshReference.model_validate(r) for r in kpoint_references]  # dicts when read from a store
    makers = pinned_makers(static_maker, dataset.frames, references)
    labeller = {id(m): labeller_key(m) for m in makers}
    keys = [label_key(labeller[id(m)], f) for m, f in zip(makers, dataset, strict=True)]
    found = find_labels(CURRENT_JOB.store, keys, code_of_maker(static_maker)) if reuse_labels else {}
    # a reused frame keeps its provenance and says where its label came from
    reused = {i: found[k].model_copy(update={"source": ";".join(filter(None, (dataset[i].source, found[k].source)))})
              for i, k in enumerate(keys) if k in found}
    logger.info("labelling %d frames with %s (%d labels reused from the store)", len(dataset) - len(reused),
                describe_labeller(static_maker), len(reused))
    flow = build_label_flow(dataset, static_maker, min_success_ratio, batch_size, name_prefix, reused, keys,
                            references)
    return Response(replace=flow)


class _OutputReader:
    """Values of ``OutputReference`` s, reading each job's last output once, as plain JSON data.

    jobflow's own resolution asks the store for a job's latest index once per reference: for a
    batch job of 200 frames x 7 fields, 1400 queries where one does.
    """

    def __init__(self, store: Any) -> None:
        self.store, self.outputs = store, {}

    def __call__(self, ref: Any) -> Any:
        """The referenced value (``None`` when its job has no output); other values pass through.

        Raises
        ------
        KeyError / IndexError / TypeError: the output lacks the referenced field.
        """
        if isinstance(ref, dict) and ref.get("@class") == "OutputReference":
            ref = OutputReference.from_dict(ref)
        if not isinstance(ref, OutputReference):
            return ref
        if ref.uuid not in self.outputs:
            doc = self.store.query_one({"uuid": ref.uuid}, properties=["output"], sort={"index": -1}, load=True)
            self.outputs[ref.uuid] = None if doc is None else doc.get("output")
        data = self.outputs[ref.uuid]
        for _, attr in ref.attributes:
            if data is None:
                return None
            data = data[attr]
        return data


# codes whose static jobs write and parse files in the job directory
FILE_BASED_CODES = ("vasp", "cp2k")


def _jobs_sharing_a_directory(entries: Sequence[dict[str, Any]], resolved: dict[int, Any]) -> dict[str, str]:
    """``{job uuid: directory}`` for the static jobs that ran in a directory used by >1 job."""
    by_dir: dict[str, set[str]] = {}
    for entry in entries:
        if "reused" in entry:  # a label from the store: no static job ran for it here
            continue
        fields = resolved[int(entry["index"])]
        if isinstance(fields, dict) and fields.get("dir_name"):
            by_dir.setdefault(str(fields["dir_name"]), set()).add(str(entry["job_uuid"]))
    return {uuid: d for d, uuids in by_dir.items() if len(uuids) > 1 for uuid in uuids}


@job(output_schema=LabelOutput, data=["dataset"])
def collect_labels(
    entries: Sequence[dict[str, Any]],
    code: str,
    labeller: str,
    min_success_ratio: float = 0.9,
    name: str = "labelled",
) -> LabelOutput:
    """Gather static-job results into a labelled dataset; drop and record failures.

    Parameters
    ----------
    entries: one per frame: ``index`` (input position), ``source`` (input provenance),
        ``key`` (label key, or None) and either ``reused`` (a labelled frame found in the
        store) or ``job_uuid`` (of its guarded static job), ``formula`` (expected composition),
        ``fields`` (task-document fields or references to them; resolved here from the job
        store as plain data, ``None`` when the static job failed) and ``error`` (a reference
        to the static job's exception text).
    code: task-document convention, key of :data:`~pfd_atomate.label.adapters.CONVENTIONS`.
    labeller: labeller description stored in the output.
    min_success_ratio: minimum fraction of labelled frames.
    name: name of the labelled dataset.

    Returns
    -------
    LabelOutput: labelled frames in input order, with the failures.

    Raises
    ------
    RuntimeError: fewer than ``min_success_ratio`` of the frames were labelled.
    """
    from pymatgen.core import Composition

    read = _OutputReader(CURRENT_JOB.store)
    resolved: dict[int, dict[str, Any] | str] = {}
    for entry in entries:
        if "reused" in entry:
            continue
        try:
            error = read(entry.get("error"))
            resolved[int(entry["index"])] = error if isinstance(error, str) else {
                key: read(ref) for key, ref in entry["fields"].items()}
        except (KeyError, IndexError, TypeError) as err:  # the document lacks a field
            resolved[int(entry["index"])] = f"task document has no {err} field"
    shared = _jobs_sharing_a_directory(entries, resolved) if code in FILE_BASED_CODES else {}

    frames: list[Frame] = []
    indices: list[int] = []
    failed: list[FailedLabel] = []
    for entry in sorted(entries, key=lambda e: e["index"]):
        index = int(entry["index"])
        if "reused" in entry:
            frames.append(Frame.model_validate(entry["reused"]))
            indices.append(index)
            continue
        uuid = str(entry["job_uuid"])
        fields = resolved[index]
        try:
            if isinstance(fields, str):
                raise LabelError(fields)
            if uuid in shared:
                raise LabelError(
                    f"several static jobs ran in {shared[uuid]}, so their files overwrote each "
                    "other (run_locally needs create_folders=True)"
                )
            structure, energy, forces, virial = labels_from_fields(fields or {}, code)
            if structure.composition != Composition(entry["formula"]):
                raise LabelError(f"labelled composition {structure.composition.formula} != {entry['formula']}")
        except LabelError as err:
            failed.append(FailedLabel(index=index, job_uuid=uuid, reason=str(err)))
            logger.warning("frame %d (job %s) dropped: %s", index, uuid, err)
            continue
        source = f"{entry['source']};label:{uuid}" if entry.get("source") else f"label:{uuid}"
        frames.append(Frame.from_structure(structure, energy=energy, forces=forces, virial=virial, source=source))
        indices.append(index)

    output = LabelOutput(
        dataset=Dataset(frames=frames, name=name),
        indices=indices,
        n_requested=len(entries),
        n_labelled=len(frames),
        n_reused=sum("reused" in entry for entry in entries),
        failed=failed,
        labeller=labeller,
    )
    if output.success_ratio < min_success_ratio:
        reasons = "; ".join(f"frame {f.index}: {f.reason}" for f in failed[:5])
        raise RuntimeError(
            f"only {len(frames)}/{len(entries)} frames labelled ({output.success_ratio:.0%} < "
            f"min_success_ratio {min_success_ratio:.0%}); {reasons}"
        )
    return output
