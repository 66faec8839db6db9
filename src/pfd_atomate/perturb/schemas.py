"""Output document of the perturbation job."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset


class PerturbOutput(BaseModel):
    """Perturbed, unlabelled frames (``dataset`` lives in the ``data`` store)."""

    dataset: Dataset
    n_structures: int
    n_frames: int
    cell_pert_fraction: float
    atom_pert_distance: float = Field(description="Å")
    atom_pert_style: str
    supercell: tuple[int, int, int] | None = None
