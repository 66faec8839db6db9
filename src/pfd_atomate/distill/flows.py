"""Distillation (PFD step 6): a fast student trained once on teacher-labelled MD frames."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atomate2.forcefields.jobs import ForceFieldStaticMaker
from atomate2.forcefields.md import ForceFieldMDMaker
from jobflow import Flow, Job, Maker
from pymatgen.core import Structure

from pfd_atomate.checks import check_int, check_number, check_supercell
from pfd_atomate.data import DatasetSelection
from pfd_atomate.data.staging import staged
from pfd_atomate.distill.jobs import gather_distill, split_teacher_frames
from pfd_atomate.evaluate.jobs import EvaluateMaker, compare_models
from pfd_atomate.explore.jobs import ExploreMaker, explore_task_jobs
from pfd_atomate.explore.schemas import TaskGroup
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.presets import STUDENT_RCUT, distillation_perturb, distillation_task_groups, se_e2_a_student
from pfd_atomate.select.filters import FrameFilter
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.jobs import TrainMaker
from pfd_atomate.train.with_model import run_with_model


@dataclass
class DistillMaker(Maker):
    """Distill a fine-tuned teacher into a student model (PFD paper, "distillation phase").

    The teacher runs MD over ``task_groups`` (many frames, cheap), labels the frames itself with
    atomate2's ``ForceFieldStaticMaker`` (through :class:`~pfd_atomate.label.flows.LabelMaker`, so
    its labels are atomate2 task documents like any labeller's), and a student (e.g. deepmd-kit
    ``se_e2_a``) is trained from scratch once and tested on held-out teacher frames and, when
    given, on held-out DFT frames.

    Parameters
    ----------
    name: flow name.
    teacher: backend of the teacher model (``PFDMaker`` sets the fine-tune backend).
    student: backend that trains the student from scratch; default
        :func:`pfd_atomate.presets.se_e2_a_student` (compressed se_e2_a).
    task_groups: MD of the teacher; ``None`` (default): :func:`pfd_atomate.presets.distillation_task_groups`
        with its large cells at least the student's cutoff wide (``student.cutoff``; 6 Å where the student's
        backend does not know its own), see :meth:`teacher_task_groups`.
    md_maker: atomate2 ``ForceFieldMDMaker`` template.
    static_maker: atomate2 ``ForceFieldStaticMaker`` template of the teacher's labels (its model is set).
    label_batch_size: frames per teacher-label job: the teacher model is loaded once per job (7-9 s
        for DPA-4 on a CPU, 0.3 s per 8-atom label); each job's task documents (about 8 kB per
        8-atom frame) are one object in the JobStore's ``data`` store.
    md_supercell: supercell of the input structures for the teacher MD.
    perturb: strained and rattled copies of the input structures for the teacher to label too;
        default :func:`pfd_atomate.presets.distillation_perturb` (100 per structure, 6 % strain,
        0.15 Å); None: MD frames only, as in the PFD paper. MD at working temperatures rarely
        strains a cell or brings two atoms as close as these frames do; without them the student
        extrapolates there (its E-V curves miss; the teacher does not: it was pre-trained on them).
    frame_filter: pre-label filters for teacher frames.
    max_frames: cap on teacher-labelled frames.
    test_fraction: share of teacher frames held out.
    seed: seed of MD velocities and the split.
    """

    name: str = "pfd distill"
    teacher: TrainerBackend | None = None
    student: TrainerBackend = field(default_factory=se_e2_a_student)
    task_groups: list[TaskGroup] | None = None
    md_maker: ForceFieldMDMaker = field(
        default_factory=lambda: ForceFieldMDMaker(force_field_name="DeepMD", store_trajectory="partial")
    )
    static_maker: ForceFieldStaticMaker = field(default_factory=lambda: ForceFieldStaticMaker(force_field_name="DeepMD"))
    label_batch_size: int = 200
    md_supercell: tuple[int, int, int] | None = None
    perturb: PerturbMaker | None = field(default_factory=distillation_perturb)
    frame_filter: FrameFilter = field(default_factory=FrameFilter)
    max_frames: int | None = None
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every setting before any job exists (``ValueError`` naming the field)."""
        check_number("DistillMaker", "test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if self.max_frames is not None:
            check_int("DistillMaker", "max_frames", self.max_frames, 2)
        check_supercell("DistillMaker", "md_supercell", self.md_supercell)
        check_int("DistillMaker", "label_batch_size", self.label_batch_size, 1)
        check_int("DistillMaker", "seed", self.seed, 0)
        if self.task_groups is not None:
            self.task_groups = [TaskGroup.model_validate(t) if isinstance(t, dict) else t for t in self.task_groups]
            if not self.task_groups:
                raise ValueError("DistillMaker.task_groups is empty: the teacher needs at least one MD task group "
                                 "(None: the default groups, presets.distillation_task_groups)")

    def teacher_task_groups(self) -> list[TaskGroup]:
        """The teacher's MD task groups: :attr:`task_groups`, or when ``None`` the default groups with their large
        cells at least as wide as the student's cutoff (``student.cutoff``, else :data:`presets.STUDENT_RCUT`):
        in a narrower cell every atom sees its own periodic images move with it (``presets.distillation_task_groups``).
        """
        if self.task_groups is not None:
            return list(self.task_groups)
        cutoff = None if self.student is None else self.student.cutoff
        return distillation_task_groups(min_length=STUDENT_RCUT if cutoff is None else cutoff)

    def make(
        self,
        teacher_model: Any,
        structures: Structure | Sequence[Structure],
        dft_test_set: Any = None,
        extra_frames: Sequence[Any] = (),
    ) -> Flow:
        """Build the distillation flow.

        Parameters
        ----------
        teacher_model: the teacher ModelFile (usually ``finetune.output.model``); one given by value
            is stored once by a first job (``"pfd distill teacher model"``) that the others reference.
        structures: starting structures of the teacher MD.
        dft_test_set: held-out DFT frames to test the student on (optional).
        extra_frames: more frame sets for the teacher to label, e.g. the perturbed frames of the
            fine-tuning data (PFD paper: "in addition to the relabeled fine-tuning dataset"),
            which cover strained cells that fixed-volume MD does not visit.

        Raises
        ------
        ValueError: missing teacher/student backend or task groups.
        """
        if self.teacher is None or self.student is None:
            raise ValueError("DistillMaker needs a teacher and a student backend")
        structures = [structures] if isinstance(structures, Structure) else list(structures)
        # a teacher given by value is stored once; every MD and label job references it
        jobs, teacher_model = staged(teacher_model, "pfd distill teacher model")
        _tag("teacher model", *jobs)
        md_jobs = explore_task_jobs(
            ExploreMaker(backend=self.teacher, md_maker=self.md_maker),
            teacher_model,
            structures,
            self.teacher_task_groups(),
            name_prefix="pfd distill explore",
            seed=self.seed,
            supercell=self.md_supercell,
        )
        jobs += _tag("explore", *md_jobs)
        # the frames of the MD jobs only: the staging job's output is the teacher model
        candidates = [md.output for md in md_jobs] + list(extra_frames)
        if self.perturb is not None:
            rattled = self.perturb.make(structures)
            rattled.name = "pfd distill perturb"
            jobs += _tag("perturb", rattled)
            candidates.append(rattled.output.dataset)
        # filter, then a random order (capped at max_frames): the split below takes the first frames
        pick = SelectMaker(name="pfd distill select", n_select=self.max_frames or sys.maxsize, method="random",
                           frame_filter=self.frame_filter, seed=self.seed).make(candidates)
        label = run_with_model(
            LabelMaker(name="pfd distill teacher label", static_maker=self.static_maker,
                       batch_size=self.label_batch_size, name_prefix="pfd distill teacher label",
                       reuse_labels=False),
            self.teacher, teacher_model, pick.output.dataset,
        )
        label.name = "pfd distill teacher label"
        split = split_teacher_frames(label.output.n_labelled, self.test_fraction)
        split.name = "pfd distill split"
        teacher_frames = label.output.dataset
        train_set = DatasetSelection(dataset=teacher_frames, indices=split.output.train_indices)
        test_set = DatasetSelection(dataset=teacher_frames, indices=split.output.test_indices)
        train = TrainMaker(name="pfd distill train student", backend=self.student).make([train_set])
        test_teacher = EvaluateMaker(name="pfd distill test vs teacher", backend=self.student).make(
            train.output.model, test_set
        )
        # the compressed student must predict what the uncompressed one does (tabulation error)
        check = compare_models(self.student, train.output.model, train.output.uncompressed_model, test_set)
        check.name = "pfd distill check compression"
        flow_jobs = [*jobs, *_tag("select", pick), *_tag("teacher label", label), *_tag("split", split),
                     *_tag("train student", train), *_tag("test vs teacher", test_teacher),
                     *_tag("check compression", check)]
        test_dft = None
        if dft_test_set is not None:
            test_dft = EvaluateMaker(name="pfd distill test vs DFT", backend=self.student).make(
                train.output.model, dft_test_set
            )
            flow_jobs += _tag("test vs DFT", test_dft)
        gather = gather_distill(
            train.uuid,
            train.output.model.sha256,
            teacher_model.sha256,
            train.output.n_frames,
            teacher_test=test_teacher.output.metrics,
            dft_test=None if test_dft is None else test_dft.output.metrics,
            compression_check=check.output,
        )
        gather.name = "pfd distill gather"
        flow_jobs += _tag("gather", gather)
        flow = Flow(flow_jobs, output=gather.output, name=self.name)
        flow.update_metadata({"pfd_step": "distill"}, dynamic=True)
        return flow


def _tag(step: str, *jobs: Job) -> list[Job]:
    """``jobs`` (as a list) with jobflow metadata ``distill_step``: which part of the distillation each is,
    what :func:`pfd_atomate.queries.distill_job` selects on (a job's name is for people)."""
    for job in jobs:
        job.update_metadata({"distill_step": step}, dynamic=False)
    return jobs
