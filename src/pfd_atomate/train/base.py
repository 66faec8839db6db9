"""The trainer interface every model backend implements.

A backend turns labelled :class:`~pfd_atomate.data.Dataset` s into a :class:`ModelFile`
(fine-tuning a foundation model or training from scratch), predicts labels with a model,
and tells atomate2's ``ForceFieldMDMaker`` how to build an ASE calculator for it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator
from monty.json import MSONable

from pfd_atomate.data import Dataset, ModelFile


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` when ``device`` is "auto" and torch sees a GPU, else ``"cpu"``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def torch_threads(n_threads: int | None):
    """Run a block with ``n_threads`` torch intra-op threads (``None``: unchanged), restoring the setting after."""
    import torch

    previous = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TrainerBackend(MSONable, ABC):
    """Backend-neutral training/inference API (one concrete class per model library).

    Backends are MSONable dataclasses so that they serialize into jobflow job documents.
    """

    #: backend name stored in :attr:`ModelFile.backend`
    name: str = ""

    @property
    def compute_device(self) -> str:
        """Where this backend's torch work runs here: "cuda" when torch sees a GPU (and the backend
        is not pinned to another device), else "cpu". Recorded in job outputs."""
        return resolve_device(getattr(self, "device", "auto"))

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

    def resumed_from_step(self, workdir: str | Path) -> int | None:
        """The step the last :meth:`train` in ``workdir`` continued an interrupted training from; ``None``
        when it started at step 0 (backends that keep no checkpoints always start there)."""
        return None

    @property
    def cutoff(self) -> float | None:
        """Cutoff radius (Å) of the models this backend trains from scratch: how far an atom's environment
        reaches. ``None``: not known before training (a fine-tuned foundation model keeps its own)."""
        return None

    #: peak resident memory of one energy/forces/stress evaluation on the CPU: base GiB + GiB per atom
    #: (measured on diamond Si, see each backend); ``None``: not known
    memory_per_atom_gib: tuple[float, float] | None = None

    def memory_estimate_gib(self, n_atoms: int, training: bool = False) -> float | None:
        """Rough peak memory (GiB) of evaluating, or training on, frames of ``n_atoms`` atoms.

        Training holds the graph of a batch of frames and its gradients: twice the evaluation
        memory per atom, times the frames per batch. ``None`` when the backend has no estimate.
        """
        if self.memory_per_atom_gib is None:
            return None
        base, per_atom = self.memory_per_atom_gib
        frames = self.frames_per_batch(n_atoms) if training else 1
        return base + per_atom * n_atoms * (2 * frames if training else 1)

    def frames_per_batch(self, n_atoms: int) -> int:
        """Frames of ``n_atoms`` atoms in one training batch."""
        return 1

    @staticmethod
    def check_training_data(datasets: Sequence[Dataset], weights: Sequence[float] | None = None,
                            need_virial: bool = False) -> list[Dataset]:
        """The checks every training does before any compute; returns the datasets as a list.

        Raises
        ------
        ValueError: a single Dataset instead of a sequence, no frames, unlabelled frames, frames
            without a virial when ``need_virial``, or weights that do not match the datasets or are
            not finite and > 0.
        """
        import math

        if isinstance(datasets, Dataset):
            raise ValueError("datasets must be a sequence of Dataset, not a single Dataset")
        datasets = list(datasets)
        if not datasets or all(len(d) == 0 for d in datasets):
            raise ValueError("no frames to train on: every dataset is empty")
        for d in datasets:
            d._require_labels()
            if need_virial:
                missing = [i for i, f in enumerate(d.frames) if f.virial is None]
                if missing:
                    raise ValueError(f"the virial is trained on but dataset {d.name!r} frames {missing[:10]} have none")
        if weights is not None:
            if len(weights) != len(datasets):
                raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
            if any(not (math.isfinite(float(w)) and float(w) > 0) for w in weights):
                raise ValueError(f"dataset weights must be finite and > 0, got {list(weights)}")
        return datasets

    def compress_model(self, model: ModelFile, workdir: str | Path) -> ModelFile | None:
        """A compressed (faster) copy of a trained model, or ``None`` when the backend has none."""
        return None

    def predict(self, model: ModelFile | None, dataset: Dataset) -> Dataset:
        """A copy of ``dataset`` whose frames carry the model's energy (eV), forces (n_atoms, 3) eV/Å and
        virial (3, 3) eV (periodic frames), from the backend's ASE :meth:`calculator` (one call per frame).

        Raises
        ------
        ValueError: a model of another backend, elements the model does not know, or a frame periodic
            along some but not all cell vectors (ASE calculators would treat it as fully periodic).
        """
        self.check_elements(dataset.elements, model)
        mixed = [i for i, f in enumerate(dataset.frames) if len(set(f.pbc)) != 1]
        if mixed:
            raise ValueError(f"dataset {dataset.name!r}: frames {mixed[:10]} are periodic along some cell vectors only")
        if len(dataset) == 0:
            return Dataset(frames=[], name=dataset.name)
        with torch_threads(getattr(self, "n_threads", None)):
            return dataset.predicted_by(self.calculator(model))

    @abstractmethod
    def calculator(self, model: ModelFile) -> Calculator:
        """An ASE calculator for ``model`` (materializes the file locally if needed)."""

    @abstractmethod
    def force_field_spec(self, model: ModelFile) -> tuple[Any, dict[str, Any]]:
        """``(force_field_name, calculator_kwargs)`` for atomate2 force-field Makers."""
