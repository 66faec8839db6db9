"""Jobs of the Label step: one atomate2 static job per frame, then a collector.

The frames to label usually come from an earlier job (known only at run time), so
:func:`label_frames` fans out dynamically with ``Response(replace=...)``. The collector
must run even when some static jobs failed: its ``on_missing_references`` is
``OnMissing.NONE``, so jobflow (``run_locally``, FireWorks via ``_allow_fizzled_parents``,
jobflow-remote) runs it, and a failed job's fields resolve to ``None``. The collector
resolves its references itself, as plain JSON data: jobflow would otherwise rebuild every
whole task document (slow, and it breaks when the worker's document classes differ from
the ones that wrote them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from jobflow import CURRENT_JOB, Flow, Job, JobConfig, Maker, OnMissing, OutputReference, Response, job
from jobflow.core.reference import find_and_resolve_references

from pfd_atomate.data import Dataset, Frame, as_dataset
from pfd_atomate.label.adapters import LabelError, code_of_maker, labels_from_fields, task_doc_fields
from pfd_atomate.label.schemas import FailedLabel, LabelOutput

logger = logging.getLogger(__name__)


def check_frames(frames: Dataset) -> None:
    """Reject input that cannot be labelled, before any job is created.

    Raises
    ------
    ValueError: empty dataset, a frame without atoms, non-finite positions, or a
        singular cell (periodic labellers need a cell volume).
    """
    import numpy as np

    if len(frames) == 0:
        raise ValueError("nothing to label: the input dataset has no frames")
    for i, frame in enumerate(frames):
        if frame.n_atoms == 0:
            raise ValueError(f"frame {i} has no atoms")
        if not np.all(np.isfinite(np.asarray(frame.positions, dtype=float))):
            raise ValueError(f"frame {i} has non-finite positions")
        if frame.volume < 1e-8:
            raise ValueError(f"frame {i} has a singular cell (volume {frame.volume:.3g} Å^3)")


def describe_labeller(static_maker: Maker) -> str:
    """Readable labeller name: maker class, job name and, for force fields, the calculator."""
    text = f"{type(static_maker).__name__}({static_maker.name!r}"
    calc = getattr(static_maker, "ase_calculator_name", None)
    return f"{text}, {calc})" if calc else f"{text})"


def supports_batches(static_maker: Maker) -> bool:
    """True for makers whose ``make`` takes a list of structures (atomate2 force-field makers)."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    return isinstance(static_maker, ForceFieldRelaxMaker)


def build_label_flow(
    frames: Dataset,
    static_maker: Maker,
    min_success_ratio: float = 0.9,
    batch_size: int | None = None,
    name_prefix: str = "pfd label",
) -> Flow:
    """Static jobs for ``frames`` plus the collector, as a Flow whose output is the collector's.

    Parameters
    ----------
    frames: frames to label (existing labels are ignored).
    static_maker: atomate2 static maker (VASP, CP2K, force field) run on each frame.
    min_success_ratio: the collector fails below this fraction of labelled frames.
    batch_size: frames per static job for makers that accept a list of structures;
        ``None``: one job per frame.
    name_prefix: prefix of the job names.

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
    if batch_size is not None and not supports_batches(static_maker):
        raise ValueError(f"{type(static_maker).__name__} labels one structure per job; use batch_size=None")
    size = batch_size or 1
    static_jobs: list[Job] = []
    entries: list[dict[str, Any]] = []
    for start in range(0, len(frames), size):
        chunk = list(range(start, min(start + size, len(frames))))
        structures = [frames[i].to_structure() for i in chunk]
        static_job = static_maker.make(structures if batch_size else structures[0])
        label = f"{chunk[0]}" if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}"
        static_job.name = f"{name_prefix} {static_job.name} {label}"
        static_jobs.append(static_job)
        for k, i in enumerate(chunk):
            # a batch job returns a list of task documents; no schema to validate an index on
            doc = OutputReference(static_job.uuid, (("i", k),)) if batch_size else static_job.output
            entries.append(
                {
                    "index": i,
                    "job_uuid": static_job.uuid,
                    "formula": structures[k].composition.formula,
                    "source": frames[i].source,
                    "fields": task_doc_fields(doc),
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
@job
def label_frames(
    frames: Dataset,
    static_maker: Maker,
    min_success_ratio: float = 0.9,
    batch_size: int | None = None,
    name_prefix: str = "pfd label",
) -> Response:
    """Fan out: replace this job by one static job per frame and the collector.

    Parameters are those of :func:`build_label_flow`; ``frames`` is usually the resolved
    output of an earlier job.

    Raises
    ------
    ValueError: empty or invalid frames (before any static job is created).
    """
    dataset = as_dataset(frames)
    if dataset is None:
        raise ValueError("nothing to label: the input dataset is None (did the upstream job fail?)")
    logger.info("labelling %d frames with %s", len(dataset), describe_labeller(static_maker))
    flow = build_label_flow(dataset, static_maker, min_success_ratio, batch_size, name_prefix)
    return Response(replace=flow)


# codes whose static jobs write and parse files in the job directory
FILE_BASED_CODES = ("vasp", "cp2k")


def _jobs_sharing_a_directory(entries: Sequence[dict[str, Any]], resolved: dict[int, Any]) -> dict[str, str]:
    """``{job uuid: directory}`` for the static jobs that ran in a directory used by >1 job."""
    by_dir: dict[str, set[str]] = {}
    for entry in entries:
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
    entries: one per frame: ``index`` (input position), ``job_uuid``, ``formula``
        (expected composition), ``source`` (input provenance) and ``fields``
        (task-document fields or references to them; resolved here from the job store
        as plain data, ``None`` when the static job failed).
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

    store = CURRENT_JOB.store
    cache: dict[str, Any] = {}
    resolved: dict[int, dict[str, Any] | str] = {}
    for entry in entries:
        try:
            resolved[int(entry["index"])] = find_and_resolve_references(
                entry["fields"], store, cache=cache, on_missing=OnMissing.NONE, deserialize=False
            )
        except (KeyError, IndexError, TypeError) as err:  # the document lacks a field
            resolved[int(entry["index"])] = f"task document has no {err} field"
    shared = _jobs_sharing_a_directory(entries, resolved) if code in FILE_BASED_CODES else {}

    frames: list[Frame] = []
    indices: list[int] = []
    failed: list[FailedLabel] = []
    for entry in sorted(entries, key=lambda e: e["index"]):
        index, uuid = int(entry["index"]), str(entry["job_uuid"])
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

    n_requested = len(entries)
    output = LabelOutput(
        dataset=Dataset(frames=frames, name=name),
        indices=indices,
        n_requested=n_requested,
        n_labelled=len(frames),
        failed=failed,
        labeller=labeller,
    )
    if output.success_ratio < min_success_ratio:
        reasons = "; ".join(f"frame {f.index}: {f.reason}" for f in failed[:5])
        raise RuntimeError(
            f"only {len(frames)}/{n_requested} frames labelled ({output.success_ratio:.0%} < "
            f"min_success_ratio {min_success_ratio:.0%}); {reasons}"
        )
    return output
