"""Validation as jobflow jobs and flows: parity, energy-volume curves, phonons and MD stability.

A model under test is described by a :class:`CalculatorSpec`: either a model file with
the backend that reads it (a :class:`~pfd_atomate.data.ModelFile`, usually an
OutputReference to a PFD training job, so the job runs on any worker that reaches the
JobStore) or any ASE calculator given by import path (e.g. a DFT code's ASE calculator,
or EMT for tests). Energy-volume curves, phonons and MD stability run atomate2's own flows (its
force-field EOS, phonon and MD Makers, through :func:`~pfd_atomate.train.with_model.run_with_model` for a stored
model); their reference may also be a DFT Maker of the same flow (:class:`~pfd_atomate.validation.phonons.Cp2kPhononMaker`,
:func:`~pfd_atomate.validation.eos.cp2k_eos_maker`). Each Maker's output is a :class:`ValidationOutput`
whose ``result`` is the comparison document and whose ``plot_png`` (base64 PNG, in the ``data``
store) is the figure, also written to the job's folder.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator
from jobflow import Flow, Job, Maker, job
from monty.json import MSONable
from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset, Frame, ModelFile, as_dataset, as_model_file
from pfd_atomate.data.staging import staged
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.evaluate.schemas import TestMetrics
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.with_model import (
    atomate2_force_field_name,
    point_at,
    run_with_model,
)
from pfd_atomate.validation.eos import (
    DEFAULT_LINEAR_STRAIN,
    DEFAULT_NUMBER_OF_FRAMES,
    compare_fits,
    fit_eos,
    force_field_eos_maker,
    plot_eos,
)
from pfd_atomate.validation.md_stability import (
    DEFAULT_MAX_DRIFT,
    analyse_nve,
    nve_start,
    plot_md_stability,
)
from pfd_atomate.validation.parity import parity_plot
from pfd_atomate.validation.phonons import (
    DEFAULT_DISPLACEMENT,
    compare_band_structures,
    force_field_phonon_maker,
)


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
        without a model; a calculator path that is not dotted.
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
        if isinstance(self.calculator, str) and "." not in self.calculator:
            raise ValueError(f"CalculatorSpec {self.name!r}: calculator import path must be dotted (module.Class), "
                             f"got {self.calculator!r}")

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
        ImportError / AttributeError / ValueError: the calculator does not resolve.
        """
        if self.backend is not None:
            return self.backend.calculator(as_model_file(self.model))
        from atomate2.forcefields.utils import ase_calculator

        return ase_calculator(self.force_field_name(), **self.calculator_kwargs)

    def force_field_name(self) -> Any:
        """The calculator as atomate2's ``force_field_name`` (a monty dict of its class)."""
        calculator = self.calculator
        if isinstance(calculator, type):
            calculator = f"{calculator.__module__}.{calculator.__qualname__}"
        return atomate2_force_field_name(calculator) if isinstance(calculator, str) else dict(calculator)

    def staged(self, name: str) -> tuple[list[Job], CalculatorSpec]:
        """This spec with a model given by value stored once (a first job named ``name``), for a Maker
        that runs it in several jobs; see :func:`~pfd_atomate.data.staging.staged`."""
        if self.backend is None:
            return [], self
        jobs, model = staged(self.model, name)
        return jobs, (dataclasses.replace(self, model=model) if jobs else self)

    def run(self, maker: Maker, structure: Any, make_kwargs: dict | None = None) -> Job | Flow:
        """atomate2's force-field ``maker`` (or a Flow Maker holding one) with this calculator, on ``structure``.

        A stored model runs through :func:`~pfd_atomate.train.with_model.run_with_model` (materialized
        on the worker); an ASE calculator or a backend's pretrained model is set at once.
        """
        structure = _as_structure(structure)
        if self.backend is not None and self.model is not None:
            return run_with_model(maker, self.backend, self.model, structure, make_kwargs)
        spec = self.backend.force_field_spec(None) if self.backend is not None else (
            self.force_field_name(), self.calculator_kwargs)
        return point_at(maker, *spec).make(structure, **(make_kwargs or {}))

    def predict(self, dataset: Dataset) -> Dataset:
        """Label ``dataset`` with this calculator: energy (eV), forces (eV/Å), virial (eV) when available."""
        if self.backend is not None:
            return self.backend.predict(as_model_file(self.model), dataset)
        return dataset.predicted_by(self.build())


def _calculator_name(calculator: Any) -> str:
    if isinstance(calculator, Mapping):
        return str(calculator.get("@callable") or calculator.get("@class"))
    if isinstance(calculator, str):
        return calculator.rpartition(".")[2]
    return getattr(calculator, "__name__", type(calculator).__name__)


def _as_structure(structure: Any, what: str = "the structure"):
    """A pymatgen ``Structure`` from itself (or its JobStore dict), ASE ``Atoms`` or a :class:`Frame`; ``ValueError``
    unless those are periodic in 3D, ``TypeError`` for any other type."""
    from ase import Atoms
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(structure, Mapping) and "lattice" in structure:
        structure = Structure.from_dict(structure)
    if isinstance(structure, Structure):
        return structure
    atoms = structure.to_atoms(with_labels=False) if isinstance(structure, Frame) else structure
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected ase.Atoms, pymatgen Structure or Frame, got {type(structure).__name__}")
    if not all(atoms.pbc):
        raise ValueError(f"{what}: phonons and equations of state need a crystal periodic in 3D")
    return AseAtomsAdaptor.get_structure(atoms.copy())  # a copy has no calculator, whose results pymatgen would read


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


def _model_and_reference(model: CalculatorSpec | Mapping, reference: CalculatorSpec | Mapping | Maker):
    """``(model spec, reference, reference name)``: serialized specs (dicts from the JobStore) become
    :class:`CalculatorSpec`, a Maker stays; ``ValueError`` when the two names are equal."""
    model = as_spec(model)
    if isinstance(reference, Mapping):
        reference = as_spec(reference)
    name = reference.name if isinstance(reference, CalculatorSpec) else type(reference).__name__.removesuffix("Maker")
    if model.name == name:
        raise ValueError(f"model and reference need different names, both are {model.name!r}")
    return model, reference, name


@dataclass
class EOSValidationMaker(Maker):
    """Energy-volume curves (Birch-Murnaghan) of given phases, model vs reference, by atomate2's EOS flows.

    Each phase and each side is one atomate2 EOS flow (one job per volume): atomate2's
    force-field ``ForceFieldEosMaker`` for a :class:`CalculatorSpec`, or a DFT EOS Maker given
    as the reference (e.g. :func:`~pfd_atomate.validation.eos.cp2k_eos_maker`, which must use the
    same strains). A last job fits every curve and compares them.

    Parameters
    ----------
    name: name of the flow and of its comparison job.
    linear_strain: first and last linear strain of the cell (volumes from ``(1 + s)^3``).
    number_of_frames: volumes per curve (>= 5).
    relax_positions: relax atomic positions at each volume (fixed cell).
    """

    name: str = "pfd validate eos"
    linear_strain: tuple[float, float] = DEFAULT_LINEAR_STRAIN
    number_of_frames: int = DEFAULT_NUMBER_OF_FRAMES
    relax_positions: bool = False

    def make(self, phases: Mapping[str, Any], model: CalculatorSpec, reference: CalculatorSpec | Maker) -> Flow:
        """EOS flows of every phase with both sides, then the fits: V0 (Å^3/atom), B0 (GPa), phase energies (eV/atom).

        Raises
        ------
        ValueError: no phases, a non-periodic phase, bad strains or equal names (before any job
            exists); a fit minimum outside the sampled volumes (in the comparison job).
        """
        model, reference, ref_name = _model_and_reference(model, reference)
        if not phases:
            raise ValueError("EOSValidationMaker: no phases given")
        structures = {n: _as_structure(s, f"phase {n!r}") for n, s in phases.items()}
        ff = force_field_eos_maker(self.linear_strain, self.number_of_frames, self.relax_positions)
        # one EOS flow per phase: a model given by value is stored once, not copied into each
        jobs, model = model.staged(f"{self.name} model")
        if isinstance(reference, CalculatorSpec):
            stage, reference = reference.staged(f"{self.name} reference model")
            jobs += stage
        curves = {"model": {}, "reference": {}}
        for n, st in structures.items():
            for side, run in (("model", model.run(ff, st)), ("reference", _run_reference(reference, ff, st))):
                run.name = f"{self.name} {side} {n}"
                jobs.append(run)
                curves[side][n] = run.output["relax"]
        compare = compare_eos_curves(curves["model"], curves["reference"], {n: len(st) for n, st in structures.items()},
                                     model.name, ref_name)
        compare.name = self.name
        compare.update_metadata({"pfd_step": "validate", "validation": "eos"}, dynamic=False)
        return Flow([*jobs, compare], compare.output, name=self.name)


def _run_reference(reference: CalculatorSpec | Maker, ff_maker: Maker, structure, make_kwargs: dict | None = None):
    if isinstance(reference, CalculatorSpec):
        return reference.run(ff_maker, structure, make_kwargs)
    return reference.make(structure, **(make_kwargs or {}))


@job(output_schema=ValidationOutput, data=["plot_png"])
def compare_eos_curves(model: Mapping[str, Mapping], reference: Mapping[str, Mapping], n_atoms: Mapping[str, int],
                       model_name: str, reference_name: str) -> ValidationOutput:
    """Birch-Murnaghan fits of atomate2 EOS outputs (``{"energy": [eV], "volume": [Å^3]}`` per phase) and their comparison.

    Raises
    ------
    ValueError: a fit minimum outside the sampled volumes.
    """
    fits = {side: {n: fit_eos(c["volume"], c["energy"], n_atoms[n], n, name) for n, c in curves.items()}
            for side, curves, name in (("model", model, model_name), ("reference", reference, reference_name))}
    result = compare_fits(fits["model"], fits["reference"])
    result.plot = str(plot_eos(result, Path.cwd() / "eos.png", model_name=model_name, reference_name=reference_name))
    return _output("eos", [model_name, reference_name], result, Path(result.plot))


@dataclass
class PhononValidationMaker(Maker):
    """Phonon band structures by atomate2's phonon flows, model vs reference, with the band RMSE in THz.

    Both sides see the same structure (not relaxed), the same supercell matrix (one atomate2
    ``get_supercell_size`` job, unless given) and the same path. A :class:`CalculatorSpec` runs
    atomate2's force-field ``PhononMaker``; a DFT phonon Maker (e.g.
    :class:`~pfd_atomate.validation.phonons.Cp2kPhononMaker`) may be the reference.

    Parameters
    ----------
    name: name of the flow and of its comparison job.
    supercell_matrix: supercell of the structure, 3 integers (diagonal) or 3x3 (None: from ``min_length``).
    min_length: minimum supercell length, Å.
    displacement: finite displacement, Å (a DFT reference Maker keeps its own: set it alike).
    npoints: q-points per path segment.
    """

    name: str = "pfd validate phonons"
    supercell_matrix: Sequence[int] | Sequence[Sequence[int]] | None = None
    min_length: float = 10.0
    displacement: float = DEFAULT_DISPLACEMENT
    npoints: int = 51

    def make(self, structure: Any, model: CalculatorSpec, reference: CalculatorSpec | Maker) -> Flow:
        """Phonon flows of both sides on the same supercell; the autoplex band RMSE (THz) of the model.

        Raises
        ------
        ValueError: bad supercell, displacement, npoints or equal names; a non-periodic structure.
        """
        from atomate2.common.jobs.phonons import get_supercell_size

        model, reference, ref_name = _model_and_reference(model, reference)
        structure = _as_structure(structure)
        ff = force_field_phonon_maker(self.min_length, self.displacement, self.npoints)
        jobs = []
        matrix = self.supercell_matrix
        if matrix is None:
            size = get_supercell_size(structure, self.min_length, None, True)
            jobs.append(size)
            matrix = size.output
        else:
            m = np.asarray(matrix)
            m = np.diag(m) if m.shape == (3,) else m
            if m.shape != (3, 3) or not np.allclose(m, np.round(m)) or round(abs(np.linalg.det(m))) < 1:
                raise ValueError(f"supercell_matrix must be 3 integers or a 3x3 integer matrix with det >= 1, "
                                 f"got {matrix}")
            matrix = np.round(m).astype(int).tolist()
        runs = {"model": model.run(ff, structure, {"supercell_matrix": matrix}),
                "reference": _run_reference(reference, ff, structure, {"supercell_matrix": matrix})}
        for side, run in runs.items():
            run.name = f"{self.name} {side}"
            jobs.append(run)
        compare = compare_phonon_bands(runs["model"].output.phonon_bandstructure,
                                       runs["reference"].output.phonon_bandstructure, model.name, ref_name)
        compare.name = self.name
        compare.update_metadata({"pfd_step": "validate", "validation": "phonons"}, dynamic=False)
        return Flow([*jobs, compare], compare.output, name=self.name)


@job(output_schema=ValidationOutput, data=["plot_png"])
def compare_phonon_bands(model: Any, reference: Any, model_name: str, reference_name: str) -> ValidationOutput:
    """Band RMSE (THz) and plot of two atomate2 phonon band structures (``PhononBSDOSDoc.phonon_bandstructure``).

    Raises
    ------
    ValueError: the two band structures lie on different q-points.
    """
    result = compare_band_structures(model, reference, model_name, reference_name, plot_path=Path.cwd() / "phonons.png")
    return _output("phonons", [model_name, reference_name], result, Path(result.plot))


@dataclass
class MDStabilityMaker(Maker):
    """NVE stability check of a model (pair distances and energy drift) by atomate2's ``ForceFieldMDMaker``.

    A Flow of atomate2's velocity-Verlet NVE job, with the model set by :meth:`CalculatorSpec.run`, from
    Maxwell-Boltzmann velocities (:func:`~pfd_atomate.validation.md_stability.nve_start`), and one job
    that analyses its trajectory (:func:`~pfd_atomate.validation.md_stability.analyse_nve`).

    Parameters
    ----------
    name: name of the flow and of its analysis job.
    n_steps: MD steps (>= 2 * interval); time_step: fs; temperature: initial temperature, K (the
        kinetic temperature settles near half of it); min_distance: collapse threshold, Å (None:
        :func:`~pfd_atomate.validation.md_stability.default_min_distance`); max_drift: eV/atom/ps;
        interval: steps between trajectory samples; seed: of the initial velocities.
    """

    name: str = "pfd validate md"
    n_steps: int = 1000
    time_step: float = 1.0
    temperature: float = 300.0
    min_distance: float | None = None
    max_drift: float = DEFAULT_MAX_DRIFT
    interval: int = 5
    seed: int = 0

    def make(self, structure: Any, model: CalculatorSpec) -> Flow:
        """NVE with ``model`` from ``structure``, then the verdict (``passed``) and the plot.

        Raises
        ------
        ValueError: bad settings, a non-periodic structure, or a pair already too close (before any job exists).
        """
        from atomate2.forcefields.md import ForceFieldMDMaker

        model = as_spec(model)
        start, threshold = nve_start(_as_structure(structure), self.n_steps, self.time_step, self.temperature,
                                     self.max_drift, self.interval, self.min_distance, self.seed)
        md = ForceFieldMDMaker(ensemble="nve", dynamics="velocityverlet", time_step=self.time_step,
                               n_steps=self.n_steps, traj_interval=self.interval, store_trajectory="partial")
        run = model.run(md, start)
        run.name = f"{self.name} {model.name}"
        settings = {"time_step": self.time_step, "interval": self.interval, "n_steps": self.n_steps,
                    "temperature": self.temperature, "min_distance": threshold, "max_drift": self.max_drift}
        check = check_md_stability(run.output.objects["trajectory"], model.name, settings)
        check.name = self.name
        check.update_metadata({"pfd_step": "validate", "validation": "md_stability"}, dynamic=False)
        return Flow([run, check], check.output, name=self.name)


@job(output_schema=ValidationOutput, data=["plot_png"])
def check_md_stability(trajectory: Any, model_name: str, settings: dict[str, Any]) -> ValidationOutput:
    """Verdict and plot of an atomate2 MD trajectory (``ForceFieldTaskDocument.objects["trajectory"]``);
    ``settings`` are the keyword arguments of :func:`~pfd_atomate.validation.md_stability.analyse_nve`."""
    frames, props = list(trajectory), trajectory.frame_properties  # jobflow hands over a pymatgen Trajectory
    result = analyse_nve(frames[0].atomic_numbers, [f.cart_coords for f in frames], [f.lattice.matrix for f in frames],
                         [p["energy"] for p in props], [p["temperature"] for p in props], **settings)
    plot = plot_md_stability({model_name: result}, Path.cwd() / "md_stability.png")
    return _output("md_stability", [model_name], result, plot, passed=result.stable)
