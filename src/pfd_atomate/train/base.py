"""The trainer interface every model backend implements.

A backend turns labelled :class:`~pfd_atomate.data.Dataset` s into a :class:`ModelFile`
(fine-tuning a foundation model or training from scratch), predicts labels with a model,
and tells atomate2's ``ForceFieldMDMaker`` how to build an ASE calculator for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator
from monty.json import MSONable

from pfd_atomate.data import Dataset, ModelFile


class TrainerBackend(MSONable, ABC):
    """Backend-neutral training/inference API (one concrete class per model library).

    Backends are MSONable dataclasses so that they serialize into jobflow job documents.
    """

    #: backend name stored in :attr:`ModelFile.backend`
    name: str = ""

    @abstractmethod
    def check_elements(self, elements: Sequence[str], model: ModelFile | None = None) -> None:
        """Raise ``ValueError`` naming the elements the (base or given) model cannot handle."""

    @abstractmethod
    def train(
        self,
        datasets: Sequence[Dataset],
        workdir: str | Path,
        init_model: ModelFile | None = None,
        weights: Sequence[float] | None = None,
    ) -> ModelFile:
        """Train a model and return it.

        Parameters
        ----------
        datasets: labelled datasets; all are trained on.
        workdir: scratch directory (created if missing).
        init_model: model to start from (fine-tune / restart); ``None`` means the
            backend's configured starting point (foundation model, or random init for
            training from scratch).
        weights: optional relative sampling weight per dataset (mixing old and new data).

        Raises
        ------
        ValueError: empty or unlabelled data, or elements the model cannot handle.
        FileNotFoundError: missing base model file.
        """

    @abstractmethod
    def predict(self, model: ModelFile, dataset: Dataset) -> Dataset:
        """Return a copy of ``dataset`` whose frames carry the model's energy/forces/virial."""

    @abstractmethod
    def calculator(self, model: ModelFile) -> Calculator:
        """An ASE calculator for ``model`` (materializes the file locally if needed)."""

    @abstractmethod
    def force_field_spec(self, model: ModelFile) -> tuple[Any, dict[str, Any]]:
        """``(force_field_name, calculator_kwargs)`` for atomate2 force-field Makers."""
