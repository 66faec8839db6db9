"""Frames and labelled datasets: the unit of data that moves between PFD steps.

A *frame* is one atomic configuration (species, positions, cell) with optional labels
(energy, forces, virial). A *dataset* is an ordered list of frames. Both are pydantic
models so that jobflow stores them as plain JSON/BSON in the JobStore (the ``data``
additional store for anything big) and a worker on another machine can rebuild them.

Units: positions and cell in Å, energy in eV, forces in eV/Å, virial in eV
(virial = -stress * volume, the deepmd-kit convention).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure



class Frame(BaseModel):
    """One atomic configuration, optionally labelled.

    Attributes
    ----------
    species: element symbols, length n_atoms.
    positions: Cartesian positions, shape (n_atoms, 3), Å.
    cell: lattice vectors as rows, shape (3, 3), Å.
    pbc: periodicity along the three cell vectors.
    energy: total energy, eV (None when unlabelled).
    forces: shape (n_atoms, 3), eV/Å (None when unlabelled).
    virial: shape (3, 3), eV (None when not computed).
    source: free-text provenance (e.g. "perturb", "md:stage0:T500:P1.0", "label:<job uuid>").
    """

    species: list[str]
    positions: list[list[float]]
    cell: list[list[float]]
    pbc: tuple[bool, bool, bool] = (True, True, True)
    energy: float | None = None
    forces: list[list[float]] | None = None
    virial: list[list[float]] | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check_shapes(self) -> Frame:
        """Shapes and finiteness, so that no trainer ever sees a NaN target or a ragged array."""
        from ase.data import atomic_numbers

        n = len(self.species)
        if n == 0:
            raise ValueError("Frame.species is empty: a frame needs at least one atom")
        unknown = sorted({s for s in self.species if s not in atomic_numbers or s == "X"})
        if unknown:
            raise ValueError(f"Frame.species has unknown element symbols {unknown}")
        for name, value, shape in (("positions", self.positions, (n, 3)), ("cell", self.cell, (3, 3)),
                                   ("forces", self.forces, (n, 3)), ("virial", self.virial, (3, 3))):
            if value is None:
                continue
            array = np.asarray(value, dtype=float)
            if array.shape != shape:
                raise ValueError(f"Frame.{name} must have shape {shape} ({n} atoms), got {array.shape}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"Frame.{name} contains non-finite values")
        if self.energy is not None and not np.isfinite(self.energy):
            raise ValueError(f"Frame.energy must be finite, got {self.energy}")
        return self

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.species)

    @property
    def is_labelled(self) -> bool:
        """True when energy and forces are present."""
        return self.energy is not None and self.forces is not None

    @property
    def volume(self) -> float:
        """Cell volume, Å^3."""
        return float(abs(np.linalg.det(np.asarray(self.cell))))

    @classmethod
    def from_atoms(cls, atoms: Atoms, source: str = "", with_labels: bool = True) -> Frame:
        """Build a frame from ASE ``Atoms``; labels are taken from an attached calculator if present."""
        results = atoms.calc.results if with_labels and atoms.calc is not None else {}
        return cls(
            species=atoms.get_chemical_symbols(),
            positions=np.asarray(atoms.get_positions(), dtype=float).tolist(),
            cell=np.asarray(atoms.get_cell(), dtype=float).tolist(),
            pbc=tuple(bool(p) for p in atoms.pbc),
            energy=float(results["energy"]) if "energy" in results else None,
            forces=np.asarray(results["forces"], dtype=float).tolist() if "forces" in results else None,
            virial=stress_to_virial(results["stress"], atoms.get_volume()).tolist() if "stress" in results else None,
            source=source,
        )

    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        energy: float | None = None,
        forces: Any = None,
        virial: Any = None,
        source: str = "",
    ) -> Frame:
        """Build a frame from a pymatgen ``Structure`` and optional labels (eV, eV/Å, eV)."""
        return cls(
            species=[site.specie.symbol for site in structure],
            positions=np.asarray(structure.cart_coords, dtype=float).tolist(),
            cell=np.asarray(structure.lattice.matrix, dtype=float).tolist(),
            energy=None if energy is None else float(energy),
            forces=None if forces is None else np.asarray(forces, dtype=float).reshape(-1, 3).tolist(),
            virial=None if virial is None else np.asarray(virial, dtype=float).reshape(3, 3).tolist(),
            source=source,
        )

    def to_atoms(self, with_labels: bool = True) -> Atoms:
        """Return ASE ``Atoms``; labels (if any) are attached as a ``SinglePointCalculator``."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(self.species, positions=self.positions, cell=self.cell, pbc=self.pbc)
        if with_labels and self.is_labelled:
            kwargs: dict[str, Any] = {"energy": self.energy, "forces": np.asarray(self.forces)}
            if self.virial is not None:
                kwargs["stress"] = virial_to_stress(np.asarray(self.virial), atoms.get_volume())
            atoms.calc = SinglePointCalculator(atoms, **kwargs)
        return atoms

    def to_structure(self) -> Structure:
        """Return a pymatgen ``Structure`` (labels are not attached)."""
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.cell), self.species, self.positions, coords_are_cartesian=True)

    def without_labels(self) -> Frame:
        """Copy with energy, forces and virial removed."""
        return self.model_copy(update={"energy": None, "forces": None, "virial": None})

    def fingerprint(self) -> str:
        """Short hash of species, cell and positions (rounded to 1e-6 Å) to recognise a frame."""
        h = hashlib.sha1()
        h.update(",".join(self.species).encode())
        h.update(np.round(np.asarray(self.cell), 6).tobytes())
        h.update(np.round(np.asarray(self.positions), 6).tobytes())
        return h.hexdigest()[:16]


def stress_to_virial(stress: np.ndarray, volume: float) -> np.ndarray:
    """ASE stress (eV/Å^3, Voigt (6,) or (3, 3), positive = tensile) → virial (3, 3) in eV."""
    from ase.stress import voigt_6_to_full_3x3_stress

    stress = np.asarray(stress, dtype=float)
    if stress.shape == (6,):
        stress = voigt_6_to_full_3x3_stress(stress)
    return -stress * volume


def virial_to_stress(virial: np.ndarray, volume: float) -> np.ndarray:
    """Virial (3, 3) in eV → ASE stress (3, 3) in eV/Å^3."""
    return -np.asarray(virial, dtype=float) / volume


class Dataset(BaseModel):
    """An ordered collection of frames (a training, iteration or test set).

    ``type_map`` fixes the order of elements for models that need one (deepmd-kit).
    """

    frames: list[Frame] = Field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):  # type: ignore[override]
        return iter(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.frames[i]

    @property
    def elements(self) -> list[str]:
        """Sorted element symbols present."""
        return sorted({s for f in self.frames for s in f.species})

    @property
    def is_labelled(self) -> bool:
        """True when every frame has energy and forces."""
        return all(f.is_labelled for f in self.frames)

    @classmethod
    def concat(cls, datasets: Iterable[Dataset | None], name: str = "") -> Dataset:
        """Concatenate datasets in order, skipping ``None``."""
        return cls(frames=[f for d in datasets if d is not None for f in d.frames], name=name)

    def subset(self, indices: Sequence[int], name: str | None = None) -> Dataset:
        """Frames at ``indices`` (in the given order)."""
        return Dataset(frames=[self.frames[i] for i in indices], name=self.name if name is None else name)

    def predicted_by(self, calculator: Any) -> Dataset:
        """Copy whose frames carry an ASE ``calculator``'s energy (eV), forces (n_atoms, 3) eV/Å and,
        for frames periodic in 3D when the calculator gives a stress, virial (3, 3) eV."""
        frames = []
        for frame in self.frames:
            atoms = frame.to_atoms(with_labels=False)
            atoms.calc = calculator
            if all(atoms.pbc) and "stress" in calculator.implemented_properties:
                atoms.get_stress()  # first: calculators compute energy and forces in the same call
            atoms.get_forces()
            labels = Frame.from_atoms(atoms)
            frames.append(frame.model_copy(update={k: getattr(labels, k) for k in ("energy", "forces", "virial")}))
        return Dataset(frames=frames, name=self.name)

    def to_atoms_list(self, with_labels: bool = True) -> list[Atoms]:
        """List of ASE ``Atoms`` (labels attached when present)."""
        return [f.to_atoms(with_labels=with_labels) for f in self.frames]

    def energies_per_atom(self) -> np.ndarray:
        """Energies divided by atom count, shape (n_frames,), eV/atom.

        Raises
        ------
        ValueError: if a frame is unlabelled.
        """
        self._require_labels()
        return np.array([f.energy / f.n_atoms for f in self.frames])

    def _require_labels(self) -> None:
        missing = [i for i, f in enumerate(self.frames) if not f.is_labelled]
        if missing:
            raise ValueError(f"dataset {self.name!r}: frames {missing[:10]} have no energy/forces labels")

    def to_dpdata(self, type_map: Sequence[str] | None = None):
        """Convert to a ``dpdata.MultiSystems`` of labelled systems (one system per formula).

        Raises
        ------
        ValueError: if a frame is unlabelled or an element is missing from ``type_map``.
        """
        import dpdata

        self._require_labels()
        type_map = list(type_map) if type_map is not None else self.elements
        unknown = sorted(set(self.elements) - set(type_map))
        if unknown:
            raise ValueError(f"elements {unknown} are not in type_map {type_map}")
        multi = dpdata.MultiSystems(type_map=type_map)
        for atoms in self.to_atoms_list(with_labels=True):
            multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
        return multi


class DatasetSelection(BaseModel):
    """Some frames of a stored dataset: a dataset (usually an ``OutputReference`` to it) and indices.

    Lets a later job use part of a dataset without the job that chose the part storing a copy
    (e.g. the frames of an iteration set inside the trust window, :class:`EvaluateOutput.added_indices`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    dataset: Any = Field(description="a Dataset, or a reference to one")
    indices: Any = Field(description="positions of the selected frames, or a reference to them")


def as_dataset(obj: Dataset | DatasetSelection | dict | None) -> Dataset | None:
    """Coerce a stored/serialized dataset (dict from the JobStore), or a resolved selection, to :class:`Dataset`."""
    if obj is None or isinstance(obj, Dataset):
        return obj
    if isinstance(obj, DatasetSelection):
        full = as_dataset(obj.dataset)
        return None if full is None else full.subset(list(obj.indices), name=f"{full.name}:selected")
    return Dataset.model_validate({k: v for k, v in obj.items() if not k.startswith("@")})
