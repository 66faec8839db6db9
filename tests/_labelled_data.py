"""Small labelled datasets for tests, labelled with ASE's EMT potential.

EMT (effective medium theory) is a cheap but physical many-body potential for fcc metals
(Cu, Ag, Au, Ni, Pd, Pt, Al), so models trained on its labels must learn real
energy/force relations, while labelling a 32-atom frame takes about a millisecond.
"""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from pfd_atomate.data import Dataset, Frame


def emt_dataset(
    n_frames: int,
    seed: int,
    element: str = "Cu",
    supercell: tuple[int, int, int] = (2, 2, 2),
    displacement: float = 0.05,
    strain: float = 0.02,
    *,
    cubic: bool = True,
) -> Dataset:
    """Randomly strained and rattled fcc frames labelled with EMT.

    Parameters
    ----------
    n_frames: number of frames.
    seed: seed of the random strains and displacements (same seed -> same frames).
    element: fcc element EMT knows (Cu, Ag, Au, Ni, Pd, Pt, Al).
    supercell: repetitions of the cell; with ``cubic=True`` (4-atom conventional cell)
        (2, 2, 2) gives 32 atoms and (2, 1, 1) gives 8; with ``cubic=False`` (1-atom
        primitive cell) (2, 2, 2) gives 8.
    displacement: standard deviation of the Gaussian displacement of each Cartesian
        coordinate, Å.
    strain: half-width of the uniform distribution of each component of the symmetric
        strain tensor (dimensionless).
    cubic: start from the conventional cubic cell instead of the primitive one.

    Returns
    -------
    Dataset with ``n_frames`` frames carrying energy (eV), forces (eV/Å) and virial (eV),
    ``source="emt"``.
    """
    rng = np.random.default_rng(seed)
    reference = bulk(element, "fcc", cubic=cubic).repeat(supercell)
    frames = []
    for _ in range(n_frames):
        atoms = reference.copy()
        eps = rng.uniform(-strain, strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.positions += rng.normal(0.0, displacement, size=atoms.positions.shape)
        atoms.calc = EMT()
        # request every property so the calculator's results hold all three labels
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        frames.append(Frame.from_atoms(atoms, source="emt"))
    return Dataset(frames=frames, name=f"emt-{element}-{seed}")
