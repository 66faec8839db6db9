"""Validation as jobflow jobs: parity, energy-volume curves, phonons and MD stability.

A model under test is described by a :class:`CalculatorSpec`: either a model file with
the backend that reads it (a :class:`~pfd_atomate.data.ModelFile`, usually an
OutputReference to a PFD training job, so the job runs on any worker that reaches the
JobStore) or any ASE calculator given by import path (e.g. a DFT code's ASE calculator,
or EMT for tests). Each Maker returns a :class:`ValidationOutput` whose ``result`` is the
comparison document and whose ``plot_png`` (base64 PNG, in the ``data`` store) is the
figure, also written to the job's folder.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator
from jobflow import Maker, job
from monty.json import MSONable
from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset, Frame, ModelFile, as_dataset, as_model_file
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.evaluate.schemas import TestMetrics
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.validation.eos import DEFAULT_STRAINS, compare_eos
from pfd_atomate.validation.md_stability import DEFAULT_MAX_DRIFT, md_stability, plot_md_stability
from pfd_atomate.validation.parity import parity_plot
from pfd_atomate.validation.phonons import DEFAULT_DISPLACEMENT, compare_phonons


@dataclass
class CalculatorSpec(MSONable):
    """A calculator that can be rebuilt inside a job, on any worker.

    Give either ``backend`` (with ``model``; ``model=None`` means the backend's built-in
    pretrained model, which only the CHGNet backend has) or ``calculator``.

    Attributes
    ----------
    name: label in results and plots.
    backend: trainer backend that reads ``model``.
    model: the model file (or its serialized dict / an OutputReference when building a flow).
    calculator: an ASE calculator class, its dotted import path
        (``"ase.calculators.emt.EMT"``) or a monty dict ``{"@module": ..., "@callable": ...}``.
    calculator_kwargs: keyword arguments of ``calculator``.

    Raises
    ------
    ValueError: neither or both of ``backend`` and ``calculator``; a deepmd backend
        without a model.
    """

    name: str = "model"
    backend: TrainerBackend | None = None
    model: Any = None
    calculator: Any = None
    calculator_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.backend is None) == (self.calculator is None):
            raise ValueError(f"CalculatorSpec {self.name!r}: give either backend (+ model) or calculator, not both/none")
        if self.backend is not None and self.model is None and self.backend.name != "chgnet":
            raise ValueError(f"CalculatorSpec {self.name!r}: backend {self.backend.name!r} needs a model file")

    @classmethod
    def from_model(cls, model: ModelFile | None, backend: TrainerBackend, name: str | None = None) -> CalculatorSpec:
        """Spec of a trained model (``model=None``: the backend's pretrained model)."""
        # model may still be an OutputReference while a flow is built: name it without touching it
        default = "pretrained" if model is None else f"{backend.name}:{model.kind if isinstance(model, ModelFile) else 'model'}"
        return cls(name=name or default, backend=backend, model=model)

    @classmethod
    def from_ase(cls, calculator: Any, name: str | None = None, **kwargs: Any) -> CalculatorSpec:
        """Spec of an ASE calculator class or import path, built with ``kwargs``."""
        return cls(name=name or _calculator_name(calculator), calculator=calculator, calculator_kwargs=kwargs)

    def build(self) -> Calculator:
        """A fresh ASE calculator (model files are materialized into the local model cache).

        Raises
        ------
        ImportError / AttributeError: the calculator import path does not resolve.
        """
        if self.backend is not None:
            return self.backend.calculator(as_model_file(self.model))
        return _resolve_calculator(self.calculator)(**self.calculator_kwargs)

    def predict(self, dataset: Dataset) -> Dataset:
        """Label ``dataset`` with this calculator: energy (eV), forces (eV/Å), virial (eV) when available."""
        if self.backend is not None:
            return self.backend.predict(as_model_file(self.model), dataset)
        calc = self.build()
        frames = []
        for frame in dataset.frames:
            atoms = frame.to_atoms(with_labels=False)
            atoms.calc = calc
            atoms.get_potential_energy()
            atoms.get_forces()
            if all(atoms.pbc) and "stress" in calc.implemented_properties:
                atoms.get_stress()
            frames.append(Frame.from_atoms(atoms, source=frame.source))
        return Dataset(frames=frames, name=dataset.name)


def _resolve_calculator(calculator: Any):
    if isinstance(calculator, Mapping):
        module, name = calculator.get("@module"), calculator.get("@callable") or calculator.get("@class")
        if not module or not name:
            raise ValueError(f"calculator dict needs '@module' and '@callable', got {dict(calculator)}")
        return getattr(importlib.import_module(module), name)
    if isinstance(calculator, str):
        module, _, name = calculator.rpartition(".")
        if not module:
            raise ValueError(f"calculator import path must be dotted (module.Class), got {calculator!r}")
        return getattr(importlib.import_module(module), name)
    if callable(calculator):
        return calculator
    raise TypeError(f"calculator must be a class, import path or monty dict, got {type(calculator).__name__}")


def _calculator_name(calculator: Any) -> str:
    if isinstance(calculator, Mapping):
        return str(calculator.get("@callable") or calculator.get("@class"))
    if isinstance(calculator, str):
        return calculator.rpartition(".")[2]
    return getattr(calculator, "__name__", type(calculator).__name__)


def as_spec(obj: CalculatorSpec | Mapping) -> CalculatorSpec:
    """Coerce a serialized spec (dict from the JobStore) to :class:`CalculatorSpec`."""
    if isinstance(obj, CalculatorSpec):
        return obj
    if isinstance(obj, Mapping):
        return CalculatorSpec.from_dict(dict(obj))
    raise TypeError(f"expected a CalculatorSpec, got {type(obj).__name__}")


class ParityResult(BaseModel):
    """Test metrics of each model on one labelled dataset (energy eV/atom, forces eV/Å)."""

    n_frames: int
    metrics: dict[str, TestMetrics]


class ValidationOutput(BaseModel):
    """Output of a validation job.

    Attributes
    ----------
    kind: "parity", "eos", "phonons" or "md_stability".
    calculators: names of the calculators involved (model(s) first, reference last).
    result: the comparison document (:class:`ParityResult`, :class:`EOSComparison`,
        :class:`PhononComparison` or :class:`MDStabilityResult`, as a dict).
    passed: for MD stability, whether the run was stable; otherwise ``None``.
    plot_path: PNG written in the job's folder.
    plot_png: the same PNG, base64 (kept in the ``data`` store).
    """

    kind: str
    calculators: list[str]
    result: dict[str, Any]
    passed: bool | None = None
    plot_path: str | None = None
    plot_png: str | None = Field(None, repr=False)


def _output(kind: str, names: list[str], result: BaseModel, plot: Path | None, passed: bool | None = None):
    png = base64.b64encode(plot.read_bytes()).decode("ascii") if plot is not None and plot.is_file() else None
    return ValidationOutput(kind=kind, calculators=names, result=result.model_dump(), passed=passed,
                            plot_path=None if plot is None else str(plot), plot_png=png)


@dataclass
class ParityMaker(Maker):
    """Parity plot and RMSEs of one or more models on a labelled dataset.

    Parameters
    ----------
    name: job name.
    reference_name: axis label of the reference labels (e.g. "DFT").
    """

    name: str = "pfd validate parity"
    reference_name: str = "DFT"

    @job(output_schema=ValidationOutput, data=["plot_png"])
    def make(self, dataset: Dataset, models: Sequence[CalculatorSpec]) -> ValidationOutput:
        """Predict ``dataset`` with every model; energy (eV/atom) and force (eV/Å) metrics and a parity plot.

        Raises
        ------
        ValueError: empty or unlabelled dataset, no models.
        """
        dataset = as_dataset(dataset)
        specs = [as_spec(m) for m in models]
        if dataset is None or len(dataset) == 0:
            raise ValueError("parity: the dataset is empty")
        dataset._require_labels()
        if not specs:
            raise ValueError("parity: no models given")
        predictions = {s.name: s.predict(dataset) for s in specs}
        metrics = {n: frame_errors(dataset, p).to_metrics() for n, p in predictions.items()}
        plot = parity_plot(dataset, predictions, Path.cwd() / "parity.png", reference_name=self.reference_name)
        return _output("parity", list(predictions), ParityResult(n_frames=len(dataset), metrics=metrics), plot)


@dataclass
class EOSValidationMaker(Maker):
    """Energy-volume curves (Birch-Murnaghan) of given phases, model vs reference.

    Parameters
    ----------
    name: job name.
    strains: linear strains of the cell (see :func:`~pfd_atomate.validation.eos.energy_volume_curve`).
    relax_positions: relax atomic positions at each volume.
    """

    name: str = "pfd validate eos"
    strains: Sequence[float] = DEFAULT_STRAINS
    relax_positions: bool = False

    @job(output_schema=ValidationOutput, data=["plot_png"])
    def make(self, phases: Mapping[str, Any], model: CalculatorSpec, reference: CalculatorSpec) -> ValidationOutput:
        """Fit E(V) of every phase with both calculators; V0 (Å^3/atom), B0 (GPa), phase energies (eV/atom).

        Raises
        ------
        ValueError: no phases, bad strains, or a fit minimum outside the sampled volumes.
        """
        model, reference = as_spec(model), as_spec(reference)
        result = compare_eos(
            dict(phases), model.build(), reference.build(), strains=self.strains, model_name=model.name,
            reference_name=reference.name, relax_positions=self.relax_positions, plot_path=Path.cwd() / "eos.png",
        )
        return _output("eos", [model.name, reference.name], result, Path(result.plot))


@dataclass
class PhononValidationMaker(Maker):
    """Phonon band structure (phonopy finite displacements), model vs reference, with the band RMSE in THz.

    Parameters
    ----------
    name: job name.
    supercell_matrix: supercell of the primitive cell (None: from ``min_length``).
    min_length: minimum supercell width, Å.
    displacement: finite displacement, Å.
    npoints: q-points per path segment.
    """

    name: str = "pfd validate phonons"
    supercell_matrix: Sequence[int] | Sequence[Sequence[int]] | None = None
    min_length: float = 10.0
    displacement: float = DEFAULT_DISPLACEMENT
    npoints: int = 51

    @job(output_schema=ValidationOutput, data=["plot_png"])
    def make(self, structure: Any, model: CalculatorSpec, reference: CalculatorSpec) -> ValidationOutput:
        """Band structures of both calculators on the same path; autoplex band RMSE (THz).

        Raises
        ------
        ValueError: bad supercell or displacement, non-periodic structure.
        """
        model, reference = as_spec(model), as_spec(reference)
        result = compare_phonons(
            structure, model.build(), reference.build(), supercell_matrix=self.supercell_matrix,
            min_length=self.min_length, displacement=self.displacement, npoints=self.npoints,
            model_name=model.name, reference_name=reference.name, plot_path=Path.cwd() / "phonons.png",
        )
        return _output("phonons", [model.name, reference.name], result, Path(result.plot))


@dataclass
class MDStabilityMaker(Maker):
    """NVE stability check of a model (pair distances and energy drift).

    Parameters
    ----------
    name: job name.
    n_steps, time_step, temperature, min_distance, max_drift, interval, seed: see
        :func:`~pfd_atomate.validation.md_stability.md_stability` (fs, K, Å, eV/atom/ps).
    """

    name: str = "pfd validate md"
    n_steps: int = 1000
    time_step: float = 1.0
    temperature: float = 300.0
    min_distance: float | None = None
    max_drift: float = DEFAULT_MAX_DRIFT
    interval: int = 5
    seed: int = 0

    @job(output_schema=ValidationOutput, data=["plot_png"])
    def make(self, structure: Any, model: CalculatorSpec) -> ValidationOutput:
        """Run NVE with ``model`` from ``structure``; ``passed`` is the stability verdict.

        Raises
        ------
        ValueError: bad settings, or a starting structure with a pair already too close.
        """
        model = as_spec(model)
        result = md_stability(
            structure, model.build(), n_steps=self.n_steps, time_step=self.time_step, temperature=self.temperature,
            min_distance=self.min_distance, max_drift=self.max_drift, interval=self.interval, seed=self.seed,
        )
        plot = plot_md_stability({model.name: result}, Path.cwd() / "md_stability.png")
        return _output("md_stability", [model.name], result, plot, passed=result.stable)
