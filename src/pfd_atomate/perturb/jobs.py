"""Perturbation job (PFD step 1): strained, displaced copies of the input structures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jobflow import Maker, job
from pymatgen.core import Structure

from pfd_atomate.checks import check_choice, check_int, check_number, check_supercell
from pfd_atomate.perturb.core import perturb_structures
from pfd_atomate.perturb.schemas import PerturbOutput


@dataclass
class PerturbMaker(Maker):
    """Make ``n_frames`` perturbed frames per input structure with dpdata.

    Parameters
    ----------
    name: job name.
    n_frames: frames per structure.
    cell_pert_fraction: relative amplitude of the random cell strain.
    atom_pert_distance: atom displacement amplitude, Å.
    atom_pert_style: "normal", "uniform" or "const" (dpdata's styles).
    supercell: expand each structure first.
    include_original: also return the unperturbed structures.
    seed: random seed (reproducible frames).
    """

    name: str = "pfd perturb"
    n_frames: int = 10
    cell_pert_fraction: float = 0.03
    atom_pert_distance: float = 0.1
    atom_pert_style: Literal["normal", "uniform", "const"] = "normal"
    supercell: tuple[int, int, int] | None = None
    include_original: bool = False
    seed: int | None = 0

    def __post_init__(self) -> None:
        """Check every setting before any job exists (``ValueError`` naming the field)."""
        check_int("PerturbMaker", "n_frames", self.n_frames, 1)
        check_number("PerturbMaker", "cell_pert_fraction", self.cell_pert_fraction, 0.0, 0.5)
        check_number("PerturbMaker", "atom_pert_distance", self.atom_pert_distance, 0.0, 2.0)
        check_choice("PerturbMaker", "atom_pert_style", self.atom_pert_style, ("normal", "uniform", "const"))
        check_supercell("PerturbMaker", "supercell", self.supercell)
        if self.seed is not None:
            check_int("PerturbMaker", "seed", self.seed, 0)

    @job(output_schema=PerturbOutput, data=["dataset"])
    def make(self, structures: Structure | Sequence[Structure]) -> PerturbOutput:
        """Perturb ``structures``; raises ``ValueError`` on bad input (see ``perturb_structures``)."""
        structures = [structures] if isinstance(structures, Structure) else list(structures)
        dataset = perturb_structures(
            structures,
            self.n_frames,
            self.cell_pert_fraction,
            self.atom_pert_distance,
            self.atom_pert_style,
            supercell=self.supercell,
            seed=self.seed,
            include_original=self.include_original,
        )
        return PerturbOutput(
            dataset=dataset,
            n_structures=len(structures),
            n_frames=len(dataset),
            cell_pert_fraction=self.cell_pert_fraction,
            atom_pert_distance=self.atom_pert_distance,
            atom_pert_style=self.atom_pert_style,
            supercell=self.supercell,
        )
