"""``LabelMaker``: label frames with any atomate2 static maker (DFT or force field)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from jobflow import Flow, Job, Maker, OutputReference
from pymatgen.core import Structure

from pfd_atomate.data import Dataset, as_dataset
from pfd_atomate.label.adapters import code_of_maker
from pfd_atomate.label.jobs import build_label_flow, check_batching, check_frames, label_frames
from pfd_atomate.label.kpoints import mesh_references


def _default_static_maker() -> Maker:
    from atomate2.vasp.jobs.core import StaticMaker

    return StaticMaker()


@dataclass
class LabelMaker(Maker):
    """Label frames (energy, forces, virial) with an atomate2 static maker, one job per frame.

    Works with atomate2's VASP ``StaticMaker`` (default), CP2K ``StaticMaker`` (see
    :func:`pfd_atomate.label.cp2k.cp2k_static_maker`) and force-field makers such as
    ``ForceFieldStaticMaker`` (a cheap labeller, or the teacher model in distillation).
    A failed static job drops its frame and is recorded in :attr:`LabelOutput.failed`;
    the collector fails only when fewer than ``min_success_ratio`` of the frames are
    labelled. This is the "label" step of each PFD fine-tuning iteration (PFD SI,
    Algorithm 1).

    Parameters
    ----------
    name: name of the flow / fan-out job.
    static_maker: atomate2 static maker run on every frame.
    min_success_ratio: minimum labelled fraction, in (0, 1].
    batch_size: frames per static job, only for makers that take a list of structures
        (atomate2 force-field makers); ``None``: one static job per frame.
    name_prefix: prefix of the static and collector job names.
    reuse_labels: before any static job runs, look up the JobStore for labels of the same
        frames by the same labeller settings and reuse them (:mod:`pfd_atomate.label.cache`);
        ``False`` labels every frame again.
    kpoint_references: unstrained structures whose automatic k-point mesh (a labeller that sets
        it from a density: atomate2's VASP default, ``cp2k_static_maker(kpoint_density=...)``) is
        kept for every frame that is a strained copy or a diagonal supercell of one of them
        (:mod:`pfd_atomate.label.kpoints`); ``None`` or empty: each frame gets the mesh of its own
        cell. ``PFDMaker`` sets its input structures here when this is ``None``.

    Raises
    ------
    ValueError: (at construction) ratio outside (0, 1], batch size < 1, batching a
        one-structure maker, or a static maker with no task-document adapter.
    """

    name: str = "pfd label"
    static_maker: Maker = field(default_factory=_default_static_maker)
    min_success_ratio: float = 0.9
    batch_size: int | None = None
    name_prefix: str = "pfd label"
    reuse_labels: bool = True
    kpoint_references: Sequence[Structure] | None = None

    def __post_init__(self) -> None:
        """Validate the options before any flow is built."""
        if not 0.0 < self.min_success_ratio <= 1.0:
            raise ValueError(f"min_success_ratio must be in (0, 1], got {self.min_success_ratio}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        check_batching(self.static_maker, self.batch_size)
        code_of_maker(self.static_maker)  # raises for unsupported makers

    def make(self, frames: Dataset | OutputReference) -> Flow | Job:
        """Label ``frames``.

        Parameters
        ----------
        frames: a :class:`Dataset` (or its dict form), or a reference to one produced by
            an earlier job.

        Returns
        -------
        Job | Flow: a job that, at run time, looks up the store for labels to reuse and replaces
            itself (``Response(replace=...)``) by one static job per remaining frame plus the
            collector; with ``reuse_labels=False`` and ``frames`` known now, that Flow directly.
            Either way ``.output`` is a :class:`~pfd_atomate.label.schemas.LabelOutput`.

        Raises
        ------
        ValueError: empty or invalid frames given directly (checked before any job exists).
        """
        if not isinstance(frames, OutputReference):
            frames = as_dataset(frames)
            if frames is None:
                raise ValueError("nothing to label: frames is None")
            check_frames(frames)
        references = mesh_references(self.static_maker, self.kpoint_references or [])
        if self.reuse_labels or isinstance(frames, OutputReference):
            made = label_frames(frames, self.static_maker, self.min_success_ratio, self.batch_size, self.name_prefix,
                                self.reuse_labels, references)
        else:  # no label reuse and frames known now: the static jobs directly
            made = build_label_flow(frames, self.static_maker, self.min_success_ratio, self.batch_size,
                                    self.name_prefix, kpoint_references=references)
        made.name = self.name
        return made
