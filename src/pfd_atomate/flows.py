"""PFDMaker: the whole PFD workflow (perturb → label → fine-tune loop → distill) as one Flow."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from jobflow import Flow, Maker
from pymatgen.core import Structure

from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.jobs import pfd_report
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.core import check_structures
from pfd_atomate.perturb.jobs import PerturbMaker


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
    label: labeller for the initial frames and for every iteration set (DFT).
    finetune: the iterative fine-tune loop (its ``label`` is replaced by ``label``).
    distill: distillation; None skips it.
    """

    name: str = "pfd"
    perturb: PerturbMaker = field(default_factory=PerturbMaker)
    label: LabelMaker = field(default_factory=LabelMaker)
    finetune: FinetuneMaker = field(default_factory=FinetuneMaker)
    distill: DistillMaker | None = None

    def make(self, structures: Structure | Sequence[Structure]) -> Flow:
        """Build the PFD flow for ``structures``.

        Input is checked before any job exists: overlapping atoms, elements the foundation
        model does not know and a missing foundation model file raise here.

        Raises
        ------
        ValueError: empty input, overlapping atoms, unknown elements, missing settings.
        FileNotFoundError: a configured model file does not exist.
        """
        structures = [structures] if isinstance(structures, Structure) else list(structures)
        check_structures(structures)
        elements = sorted({el.symbol for s in structures for el in s.composition.elements})
        if self.finetune.trainer is None:
            raise ValueError("PFDMaker.finetune needs a trainer backend (the foundation model)")
        self.finetune.trainer.check_elements(elements)
        if self.distill is not None:
            if self.distill.student is None:
                raise ValueError("PFDMaker.distill needs a student backend")
            self.distill.student.check_elements(elements)

        perturb = self.perturb.make(structures)
        perturb.name = "pfd perturb"
        initial = self.label.make(perturb.output.dataset)
        initial.name = "pfd label initial"
        finetune_maker = dataclasses.replace(self.finetune, label=self.label)
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
            initial_label={
                "n_labelled": initial.output.n_labelled,
                "n_requested": initial.output.n_requested,
                "labeller": initial.output.labeller,
                "job": initial.uuid,
            },
            finetune=finetune.output,
            finetune_job=finetune.jobs[-1].uuid,
            foundation={"backend": self.finetune.trainer.name, "base_model": None if base is None else str(base)},
            distill=None if distill is None else distill.output,
            distill_job=None if distill is None else distill.jobs[-1].uuid,
        )
        report.name = "pfd report"
        jobs.append(report)
        return Flow(jobs, output=report.output, name=self.name)
