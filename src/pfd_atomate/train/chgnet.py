"""CHGNet backend: the offline foundation model and its fine-tuning (PFD steps 2 and 6).

CHGNet 0.3.0's pretrained weights ship inside the ``chgnet`` wheel, so this backend works without
network access. Fine-tuning uses chgnet's own :class:`chgnet.trainer.Trainer` after a least-squares
re-fit of the per-element reference energies (:mod:`pfd_atomate.train.chgnet_training`); models are
loaded safely and run as ASE calculators by :mod:`pfd_atomate.train.chgnet_calculator`.

Units follow :mod:`pfd_atomate.data.frames`: energy eV (total), forces eV/Å, virial eV
(virial = -stress * volume).
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers

from pfd_atomate.data import Dataset, ModelFile
from pfd_atomate.data.models import sha256_of_file
from pfd_atomate.train.base import TrainerBackend, torch_threads
from pfd_atomate.train.chgnet_calculator import (  # noqa: F401  (re-exported: the calculator atomate2 builds)
    CALCULATOR_PATH,
    PRETRAINED_VERSION,
    FineTunedCHGNetCalculator,
    check_checkpoint,
    load_network,
    pretrained_checkpoint,
)
from pfd_atomate.train.chgnet_training import (
    frame_sampling_weights,
    freeze_layers,
    graphs_or_raise,
    rereference_energies,
)

if TYPE_CHECKING:
    from chgnet.model import CHGNet

#: CHGNet's atom embedding and AtomRef cover atomic numbers 1..MAX_Z
MAX_Z = 94
MODEL_FILENAME = "chgnet_finetuned.pth.tar"


@dataclass
class CHGNetBackend(TrainerBackend):
    """Fine-tune and run CHGNet (offline foundation model of pfd-atomate).

    Attributes
    ----------
    epochs: passes over the (re-sampled) training frames; 0 re-fits the per-element
        reference energies only (no gradient step).
    learning_rate: initial Adam learning rate (cosine decay to 1 % over the run).
    batch_size: frames per gradient step.
    energy_loss_weight, force_loss_weight, stress_loss_weight: weights of the MSE terms
        (energy in eV/atom, forces eV/Å, stress GPa) in chgnet's combined loss.
    use_stress: also fit the stress (every frame then needs a virial).
    rereference_energies: least-squares re-fit of CHGNet's per-element reference
        energies (AtomRef) to the labels ("change bias") before training, and again after
        it to remove the drift of the mean energy.
    train_composition_model: keep the AtomRef weights trainable during gradient fine-tuning.
    freeze_embedding: freeze atom/bond/angle embeddings and basis expansions.
    n_frozen_blocks: also freeze the first n interaction blocks (atom, bond and angle
        layers); 3 of 4 reproduces chgnet's fine-tuning example (only the last atom
        convolution and the readout train).
    seed: seed of torch initialisation and frame shuffling.
    n_threads: torch intra-op threads (``None`` leaves torch's setting alone).
    device: torch device, "cpu", "cuda" or "auto" (CUDA when torch sees a GPU: training, MD
        and labels by the teacher then run there).
    base_model: CHGNet checkpoint file to start from when no ``init_model`` is given;
        ``None`` is the pretrained CHGNet 0.3.0 shipped in the wheel.
    """

    name: ClassVar[str] = "chgnet"
    #: measured peak of an MD process: 1.3 GiB at 64 atoms, 2.8 at 512, 8.5 at 1728 (benchmarks/)
    memory_per_atom_gib: ClassVar[tuple[float, float]] = (1.0, 0.0043)

    epochs: int = 20
    learning_rate: float = 1e-3
    batch_size: int = 4
    energy_loss_weight: float = 1.0
    force_loss_weight: float = 1.0
    stress_loss_weight: float = 0.1
    use_stress: bool = False
    rereference_energies: bool = True
    train_composition_model: bool = False
    freeze_embedding: bool = True
    n_frozen_blocks: int = 0
    seed: int = 0
    n_threads: int | None = None
    device: str = "auto"
    base_model: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.n_frozen_blocks < 0:
            raise ValueError(f"n_frozen_blocks must be >= 0, got {self.n_frozen_blocks}")
        weights = (self.energy_loss_weight, self.force_loss_weight, self.stress_loss_weight)
        if min(weights) < 0:
            raise ValueError(f"loss weights must be >= 0, got {weights}")

    def frames_per_batch(self, n_atoms: int) -> int:
        """:attr:`batch_size` frames per gradient step."""
        return int(self.batch_size)

    # ------------------------------------------------------------------ elements
    def check_elements(self, elements: Sequence[str], model: ModelFile | None = None) -> None:
        """Check that CHGNet can represent every element.

        Parameters
        ----------
        elements: element symbols.
        model: a CHGNet :class:`ModelFile` (any CHGNet checkpoint covers the same elements).

        Raises
        ------
        ValueError: for unknown symbols, elements beyond Pu (Z > 94, outside CHGNet's atom
            embedding), or a model of another backend.
        FileNotFoundError: ``base_model`` is set (and no ``model`` given) but does not exist.
        ValueError: ``base_model`` is not a CHGNet checkpoint (checked by loading it, weights only).
        """
        if model is None and self.base_model is not None:
            if not Path(self.base_model).is_file():
                raise FileNotFoundError(f"CHGNet base_model not found: {self.base_model}")
            check_checkpoint(str(Path(self.base_model).resolve()), Path(self.base_model).stat().st_mtime)
        if model is not None and model.backend != self.name:
            raise ValueError(f"model {model.filename} is a {model.backend!r} model, not {self.name!r}")
        unknown = sorted({e for e in elements if e not in atomic_numbers})
        if unknown:
            raise ValueError(f"unknown element symbols {unknown}")
        unsupported = sorted({e for e in elements if not 1 <= atomic_numbers[e] <= MAX_Z})
        if unsupported:
            raise ValueError(f"CHGNet covers Z = 1..{MAX_Z} (H..Pu); cannot handle {unsupported}")

    # ------------------------------------------------------------------ training
    def train(
        self,
        datasets: Sequence[Dataset],
        workdir: str | Path,
        init_model: ModelFile | None = None,
        weights: Sequence[float] | None = None,
    ) -> ModelFile:
        """Fine-tune CHGNet on labelled frames and return the checkpoint.

        Steps: (1) start from ``init_model`` (previous PFD iteration), else ``base_model``,
        else the pretrained CHGNet; (2) re-fit the per-element reference energies by least
        squares (``rereference_energies``); (3) ``epochs`` of gradient fine-tuning with
        ``chgnet.trainer.Trainer``; (4) save ``{workdir}/chgnet_finetuned.pth.tar``
        (readable by ``CHGNet.from_file``). Training output goes to
        ``{workdir}/chgnet_train.log``.

        Parameters
        ----------
        datasets: labelled datasets (energy eV, forces eV/Å; virial eV if ``use_stress``).
        workdir: scratch directory (created if missing).
        init_model: CHGNet model to continue from.
        weights: relative share of each dataset in the frames drawn per epoch (e.g. mixing
            old and new data at a fixed ratio, PFD paper "fine-tuned using a mix of new and
            old training datasets in a predetermined ratio"); frames are drawn with
            replacement, each frame of dataset i with probability ∝ weights[i] / n_frames_i.
            ``None``: every frame once per epoch.

        Returns
        -------
        ModelFile with backend "chgnet", ``type_map`` the sorted elements trained on
        (plus those of ``init_model``), kind "finetuned" and ``parent_sha256`` the digest
        of the starting checkpoint.

        Raises
        ------
        ValueError: no frames, unlabelled frames, missing virials with ``use_stress``,
            non-periodic frames, bad ``weights``, unsupported elements, or an
            ``init_model`` of another backend.
        FileNotFoundError: ``base_model`` does not exist.
        """
        datasets = self.check_training_data(datasets, weights, need_virial=self.use_stress)
        for d in datasets:
            _require_periodic(d)
        self.check_elements(sorted({e for d in datasets for e in d.elements}), init_model)
        import torch
        from chgnet.data.dataset import StructureData

        if init_model is not None:
            start_path, parent_sha = init_model.materialize(), init_model.sha256
        elif self.base_model is not None:  # check_elements has found it
            start_path, parent_sha = Path(self.base_model), sha256_of_file(self.base_model)
        else:  # start_path None: the pretrained CHGNet
            pretrained = pretrained_checkpoint()
            start_path, parent_sha = None, sha256_of_file(pretrained) if pretrained is not None else None
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        random.seed(self.seed)
        torch.manual_seed(self.seed)
        frames = [f for d in datasets for f in d.frames]
        with torch_threads(self.n_threads):
            model = load_network(start_path, quiet=True)
            with open(workdir / "chgnet_train.log", "a") as log, contextlib.redirect_stdout(log):
                data = StructureData(
                    structures=[f.to_structure() for f in frames],
                    energies=[f.energy / (f.n_atoms if model.is_intensive else 1) for f in frames],
                    forces=[f.forces for f in frames],
                    # chgnet expects VASP's stress convention (kbar, positive = compressive)
                    stresses=[np.asarray(f.virial) / f.volume / (1e3 * units.bar) for f in frames]
                    if self.use_stress
                    else None,
                    graph_converter=model.graph_converter,
                    shuffle=False,
                )
                graphs = graphs_or_raise(data, frames)
                labels = [float(e) for e in data.energies]
                if self.rereference_energies:
                    shift = rereference_energies(model, graphs, labels)
                    print(f"re-referenced per-element energies before training (eV/atom): {shift}")
                if self.epochs > 0:
                    self._fine_tune(model, data, datasets, weights)
                    if self.rereference_energies:
                        # the network's mean energy drifts while fitting forces; a final
                        # least-squares re-fit of the references removes that drift
                        shift = rereference_energies(model, graphs, labels)
                        print(f"re-referenced per-element energies after training (eV/atom): {shift}")

            path = workdir / MODEL_FILENAME
            torch.save({"model": model.cpu().as_dict()}, path)
        elements = {e for d in datasets for e in d.elements} | set(init_model.type_map if init_model else [])
        return ModelFile.from_path(
            path, backend=self.name, type_map=sorted(elements), kind="finetuned", parent_sha256=parent_sha
        )

    def _fine_tune(
        self,
        model: CHGNet,
        data: Any,
        datasets: list[Dataset],
        weights: Sequence[float] | None,
    ) -> None:
        """Gradient fine-tuning with ``chgnet.trainer.Trainer`` (model is updated in place)."""
        import torch
        from chgnet.data.dataset import collate_graphs
        from chgnet.trainer import Trainer
        from torch.utils.data import DataLoader, WeightedRandomSampler

        freeze_layers(model, embedding=self.freeze_embedding, n_blocks=self.n_frozen_blocks)
        generator = torch.Generator().manual_seed(self.seed)
        if weights is None:
            sampler_kwargs: dict[str, Any] = {"shuffle": True, "generator": generator}
        else:
            per_frame = frame_sampling_weights([len(d) for d in datasets], weights)
            sampler = WeightedRandomSampler(
                per_frame.tolist(), num_samples=len(per_frame), replacement=True, generator=generator
            )
            sampler_kwargs = {"sampler": sampler}
        train_loader = DataLoader(data, batch_size=self.batch_size, collate_fn=collate_graphs, **sampler_kwargs)
        # all labelled frames are for training; chgnet's Trainer still wants a validation
        # loader, an empty one costs nothing (its "val MAE" in the log then reads 0)
        val_loader = DataLoader([], batch_size=1, collate_fn=collate_graphs)
        trainer = Trainer(
            model=model,
            targets="efs" if self.use_stress else "ef",
            energy_loss_ratio=self.energy_loss_weight,
            force_loss_ratio=self.force_loss_weight,
            stress_loss_ratio=self.stress_loss_weight,
            optimizer="Adam",
            scheduler="CosLR",
            criterion="MSE",
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            print_freq=max(1, len(train_loader)),
            torch_seed=self.seed,
            use_device=self.compute_device,
        )
        print("no validation set: every labelled frame is used for training (val MAE reads 0)")
        # save_dir="" disables chgnet's per-epoch checkpoints; we save the final model
        trainer.train(train_loader, val_loader, save_dir="", train_composition_model=self.train_composition_model)
        model.eval()

    # ------------------------------------------------------------------ inference
    def predict(self, model: ModelFile | None, dataset: Dataset) -> Dataset:
        """:meth:`TrainerBackend.predict` (``model=None``: the pretrained CHGNet); ``ValueError`` for
        frames that are not periodic (CHGNet needs crystals)."""
        _require_periodic(dataset)
        return super().predict(model, dataset)

    def calculator(self, model: ModelFile | None) -> Calculator:
        """ASE calculator for ``model`` (``None``: pretrained CHGNet); materializes the file. One per
        model in this process (the model cache path names its sha256).

        Raises
        ------
        ValueError: model of another backend.
        """
        path = None
        if model is not None:
            self.check_elements([], model)
            path = model.materialize()
        return _cached_calculator(path, self.compute_device, self.n_threads)

    def force_field_spec(self, model: ModelFile | None) -> tuple[dict[str, str], dict[str, Any]]:
        """``(force_field_name, calculator_kwargs)`` for atomate2's ``ForceFieldMDMaker``.

        ``force_field_name`` is the monty-style dict
        ``{"@module": "pfd_atomate.train.chgnet", "@callable": "FineTunedCHGNetCalculator"}``:
        atomate2 0.1.5 accepts a dotted import path only as ``calculator_meta``, while a
        dict ``force_field_name`` is turned into that ``calculator_meta``.
        ``calculator_kwargs`` is ``{"model": <materialized path>, "device": ...}`` plus
        ``n_threads`` when set.

        The model file is materialized on the calling machine, so call this inside the job
        that runs the MD. ``model=None`` gives the pretrained CHGNet.

        Raises
        ------
        ValueError: model of another backend.
        """
        kwargs: dict[str, Any] = {"device": self.compute_device}
        if self.n_threads:
            kwargs["n_threads"] = self.n_threads
        if model is not None:
            self.check_elements([], model)
            kwargs["model"] = str(model.materialize())
        module, callable_name = CALCULATOR_PATH.rsplit(".", 1)
        return {"@module": module, "@callable": callable_name}, kwargs




@functools.lru_cache(maxsize=4)
def _cached_calculator(path: Path | None, device: str, n_threads: int | None) -> FineTunedCHGNetCalculator:
    return FineTunedCHGNetCalculator(model=path, device=device, n_threads=n_threads)


def _require_periodic(dataset: Dataset) -> None:
    aperiodic = [i for i, f in enumerate(dataset.frames) if not all(f.pbc)]
    if aperiodic:
        raise ValueError(f"dataset {dataset.name!r}: frames {aperiodic[:10]} are not periodic; CHGNet needs crystals")
