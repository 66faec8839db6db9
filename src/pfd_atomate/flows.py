"""PFDMaker: the whole PFD workflow (perturb → label → fine-tune loop → distill) as one Flow."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from jobflow import Flow, Maker
from pymatgen.core import Structure

from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.jobs import pfd_report
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.core import as_structures, check_structures
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.schemas import ModelLineage

logger = logging.getLogger(__name__)


@dataclass
class PFDMaker(Maker):
    """Turn crystal structures into a fine-tuned teacher and a distilled student force field.

    PFD paper (Pre-train, Fine-tuning and Distillation), Fig. 1: perturb the inputs and label
    them (``label``: any atomate2 static Maker, wrapped), fine-tune the foundation model
    iteratively over exploration stages (``finetune``), then distill (``distill``).

    Parameters
    ----------
    name: flow name.
    perturb: initial perturbed frames.
    label: labeller for the initial frames and for every iteration set (DFT). Unless its
        ``kpoint_references`` are set, the input structures become them: a labeller with an
        automatic k-point mesh gives all frames of one structure that structure's mesh.
    finetune: the iterative fine-tune loop (its ``label`` is replaced by ``label``).
    distill: distillation (default: a compressed se_e2_a student); None skips it.
    max_memory_gib: refuse cells whose estimated peak memory of training or MD (per backend,
        :meth:`TrainerBackend.memory_estimate_gib`) exceeds this; ``None``: this machine's
        memory. Past half of it a warning is logged.
    """

    name: str = "pfd"
    perturb: PerturbMaker = field(default_factory=PerturbMaker)
    label: LabelMaker = field(default_factory=LabelMaker)
    finetune: FinetuneMaker = field(default_factory=FinetuneMaker)
    distill: DistillMaker | None = field(default_factory=DistillMaker)
    max_memory_gib: float | None = None

    def make(self, structures: Structure | Sequence[Structure]) -> Flow:
        """Build the PFD flow for ``structures``.

        Input is checked before any job exists: the type of the input, singular lattices,
        overlapping atoms, elements the foundation model does not know, a missing foundation
        model file and cells too large for this machine's memory raise here.

        Parameters
        ----------
        structures: a pymatgen ``Structure``, ASE ``Atoms`` with a cell, or a list of them.

        Raises
        ------
        TypeError: input that is not a periodic structure (a ``Molecule``, a file name, ...).
        ValueError: empty input, singular lattice, overlapping atoms, unknown elements, missing
            settings, or an estimated peak memory above :attr:`max_memory_gib`.
        FileNotFoundError: a configured model file does not exist.
        """
        structures = as_structures(structures)
        check_structures(structures)
        elements = sorted({el.symbol for s in structures for el in s.composition.elements})
        if self.finetune.trainer is None:
            raise ValueError("PFDMaker.finetune needs a trainer backend (the foundation model)")
        self.finetune.trainer.check_elements(elements)
        if self.distill is not None:
            if self.distill.student is None:
                raise ValueError("PFDMaker.distill needs a student backend")
            self.distill.student.check_elements(elements)

        self._check_memory(structures)

        perturb = self.perturb.make(structures)
        perturb.name = "pfd perturb"
        perturb.update_metadata({"pfd_step": "perturb"}, dynamic=False)
        # every frame derived from an input structure is labelled with that structure's k-point mesh
        label = self.label if self.label.kpoint_references is not None else dataclasses.replace(
            self.label, kpoint_references=list(structures))
        initial = label.make(perturb.output.dataset)
        initial.name = "pfd label initial"
        initial.update_metadata({"pfd_step": "label", "label_set": "initial"}, dynamic=True)
        finetune_maker = dataclasses.replace(self.finetune, label=label)
        finetune = finetune_maker.make(structures, [initial.output.dataset])
        jobs = [perturb, initial, finetune]
        distill = None
        if self.distill is not None:
            distill_maker = dataclasses.replace(self.distill, teacher=self.distill.teacher or self.finetune.trainer)
            distill = distill_maker.make(
                finetune.output.model,
                structures,
                dft_test_set=finetune.output.test_set,
                extra_frames=[perturb.output.dataset],
            )
            jobs.append(distill)
        base = getattr(self.finetune.trainer, "base_model", None)
        report = pfd_report(
            formula="-".join(sorted({s.composition.reduced_formula for s in structures})),
            n_structures=len(structures),
            initial=initial.output,
            initial_job=initial.uuid,
            finetune=finetune.output,
            foundation=ModelLineage(role="foundation", backend=self.finetune.trainer.name,
                                    base_model=None if base is None else str(base),
                                    sha256=_foundation_sha256(base)),
            distill=None if distill is None else distill.output,
            student_backend=None if self.distill is None else self.distill.student.name,
        )
        report.name = "pfd report"
        report.update_metadata({"pfd_step": "report"}, dynamic=False)
        jobs.append(report)
        flow = Flow(jobs, output=report.output, name=self.name)
        # one identity for the run: every job, the dynamic ones included, carries the flow's uuid
        flow.update_metadata({"pfd_run": flow.uuid}, dynamic=True)
        return flow

    def _check_memory(self, structures: Sequence[Structure]) -> None:
        """Refuse (or warn about) cells whose training or MD would not fit in memory."""
        # by default this machine's physical memory, GiB
        limit = self.max_memory_gib or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

        def size(structure, repeats) -> int:
            # atoms of the structure repeated so (None: as it is)
            return len(structure) * int(np.prod(repeats or (1, 1, 1)))

        def atoms(repeats) -> int:
            return max(size(s, repeats) for s in structures)

        def md_atoms(maker_supercell, groups) -> int:
            # the largest MD cell the task groups make (TaskGroup.repeats: the rule the MD jobs follow)
            return max((size(s, g.repeats(s, maker_supercell)) for g in groups for s in structures),
                       default=atoms(maker_supercell))

        explore_groups = [g for stage in self.finetune.stages for g in stage.task_groups]
        checks = [("fine-tuning", self.finetune.trainer, atoms(self.perturb.supercell), True),
                  ("exploration MD", self.finetune.trainer, md_atoms(self.finetune.md_supercell, explore_groups), False)]
        if self.distill is not None:
            checks.append(("student training", self.distill.student,
                           md_atoms(self.distill.md_supercell, self.distill.teacher_task_groups()), True))
        for what, backend, n_atoms, training in checks:
            estimate = backend.memory_estimate_gib(n_atoms, training=training)
            if estimate is None:
                continue
            if estimate > limit:
                raise ValueError(
                    f"{what} of {n_atoms}-atom cells with {type(backend).__name__} needs about {estimate:.1f} GiB, "
                    f"more than max_memory_gib={limit:.1f}: use smaller cells (supercell settings) or raise "
                    "PFDMaker.max_memory_gib"
                )
            if estimate > 0.5 * limit:
                logger.warning("%s of %d-atom cells with %s needs about %.1f GiB of %.1f GiB", what, n_atoms,
                               type(backend).__name__, estimate, limit)


def _foundation_sha256(base_model: object) -> str | None:
    """The recorded SHA-256 of a registry foundation model (None for a path or a built-in one)."""
    from pfd_atomate.train import foundation

    return foundation.lookup(str(base_model)).sha256 if foundation.is_registered(base_model) else None
