"""One k-point mesh per input structure, kept for every frame derived from it.

A labeller that sets its k-point mesh from a density (atomate2's VASP ``StaticMaker``:
``reciprocal_density`` 64; :func:`~pfd_atomate.label.cp2k.cp2k_static_maker` with ``kpoint_density``)
gives each frame the mesh of its own cell. The strained copies of one structure then straddle the
rounding of the mesh: in the multi-phase CP2K benchmark, 3 of 6 strained diamond Si8 cells got
3x3x3 and 3 got 3x4x3, 3x4x4 or 4x3x3, so one structure's labels mixed k-point errors of up to
~13 meV/atom, noise that a model then fits. Here the mesh comes from the *unstrained* input
structure (its **reference**) and every frame that is a strained copy or a diagonal supercell of it
gets that mesh (divided by the supercell multiple, rounded up), whatever its strain.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from jobflow import Maker
    from pymatgen.core import Structure
    from pymatgen.io.vasp.inputs import Kpoints

    from pfd_atomate.data import Frame

logger = logging.getLogger(__name__)

#: largest Green-Lagrange strain (absolute principal value) at which a frame still counts as a copy
#: of a reference cell: covers the perturbation (a few %) and NPT exploration; β-Sn Si8 is 11 %
#: from diamond Si8, and the closest reference always wins
MAX_STRAIN = 0.2


class MeshReference(BaseModel):
    """The automatic k-point mesh a labeller gives one unstrained input structure.

    Attributes
    ----------
    cell: the reference lattice vectors as rows, shape (3, 3), Å.
    n_atoms: atoms in the reference cell.
    mesh: k-point divisions along the three reciprocal vectors.
    style: ``"Gamma"`` (Γ-centred) or ``"Monkhorst"`` (pymatgen ``Kpoints`` style name).
    shift: mesh shift, in units of a mesh step.
    """

    cell: list[list[float]]
    n_atoms: int = Field(gt=0)
    mesh: tuple[int, int, int]
    style: str = "Monkhorst"
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def kpoints(self, multiples: Sequence[int] = (1, 1, 1)) -> Kpoints:
        """The mesh for a diagonal supercell ``multiples`` of the reference (ceil(mesh / multiple)), as ``Kpoints``."""
        from pymatgen.io.vasp.inputs import Kpoints

        mesh = tuple(max(1, math.ceil(m / n - 1e-9)) for m, n in zip(self.mesh, multiples, strict=True))
        return Kpoints(comment=f"pfd-atomate: mesh of reference cell ({self.n_atoms} atoms)",
                       style=Kpoints.supported_modes.from_str(self.style), kpts=[mesh], kpts_shift=self.shift)


def _generator(static_maker: Maker) -> Any:
    return getattr(static_maker, "input_set_generator", None)


def reference_kpoints(static_maker: Maker, structure: Structure) -> Kpoints | None:
    """The automatic mesh ``static_maker`` would give ``structure``, or None when there is nothing to pin.

    Nothing to pin: a maker without an input-set generator (force fields), a fixed mesh (a ``Kpoints``
    given as ``user_kpoints_settings``), the Γ point only, VASP's ``KSPACING``, or a k-point list that
    is not a regular mesh (atomate2's CP2K ``reciprocal_density``: irreducible points with weights).

    Raises
    ------
    ValueError: a maker with an input-set generator but no label adapter (see ``code_of_maker``).
    """
    from pymatgen.io.vasp.inputs import Kpoints

    generator = _generator(static_maker)
    if generator is None or isinstance(getattr(generator, "user_kpoints_settings", None), Kpoints):
        return None
    from pfd_atomate.label.adapters import code_of_maker

    code = code_of_maker(static_maker)
    if code == "vasp":
        kpoints = generator.get_input_set(structure, potcar_spec=True).get("KPOINTS")
    elif code == "cp2k":
        if getattr(generator, "user_kpoints_settings", None) is None:
            return None  # atomate2's CP2K: no KPOINTS section, the Γ point only
        kpoints = generator._get_kpoints(structure, None)  # noqa: SLF001 - the generator's own mesh rule
    else:
        return None
    automatic = (Kpoints.supported_modes.Gamma, Kpoints.supported_modes.Monkhorst)
    if kpoints is None or kpoints.style not in automatic or len(kpoints.kpts) != 1:
        return None
    return kpoints


def mesh_references(static_maker: Maker, structures: Sequence[Structure]) -> list[MeshReference]:
    """One :class:`MeshReference` per structure whose mesh ``static_maker`` sets automatically.

    Parameters
    ----------
    static_maker: an atomate2 static Maker (VASP, CP2K, force field).
    structures: the unstrained input structures (pymatgen ``Structure``).

    Returns
    -------
    list[MeshReference]: empty when the maker's mesh is fixed or it has none (see :func:`reference_kpoints`).
    """
    references = []
    for structure in structures:
        kpoints = reference_kpoints(static_maker, structure)
        if kpoints is not None:
            references.append(MeshReference(
                cell=structure.lattice.matrix.tolist(), n_atoms=len(structure),
                mesh=tuple(int(k) for k in kpoints.kpts[0]), style=kpoints.style.name,
                shift=tuple(float(s) for s in (kpoints.kpts_shift or (0, 0, 0)))))
    return references


def _canonical(cell) -> np.ndarray:
    """``cell`` rotated so that its rows form a lower-triangular matrix with a positive diagonal.

    Two cells that differ by a rotation get the same form, and so does a diagonal supercell of a cell
    (``diag(n) @ cell``); a non-diagonal supercell in general does not.
    """
    q, r = np.linalg.qr(np.asarray(cell, dtype=float).T)  # cell = r.T @ q.T
    return r.T * np.sign(np.diag(r))  # flip columns so the diagonal is positive (cell up to an orthogonal map)


def match_reference(cell: np.ndarray, n_atoms: int, references: Sequence[MeshReference],
                    max_strain: float = MAX_STRAIN) -> tuple[int, np.ndarray] | None:
    """Which reference ``cell`` is a strained copy (or supercell) of: the closest, by strain.

    ``cell = M @ reference @ D`` with an integer matrix ``M`` (``|det M| * reference atoms = n_atoms``)
    and a deformation ``D`` whose Green-Lagrange strain has all principal values within ``max_strain``;
    both cells are compared in their canonical orientation (:func:`_canonical`), so a rotated frame
    matches, and a non-diagonal supercell in general does not.

    Parameters
    ----------
    cell: lattice vectors as rows, shape (3, 3), Å.
    n_atoms: atoms in ``cell``.
    references: the candidate references.
    max_strain: largest accepted absolute principal strain.

    Returns
    -------
    (index of the reference, M as an int array of shape (3, 3)), or None when no reference fits.
    """
    cell = _canonical(cell)  # frames may come rotated (dpdata's perturbation writes a lower-triangular cell)
    best: tuple[float, int, np.ndarray] | None = None
    for i, reference in enumerate(references):
        ref = _canonical(reference.cell)
        multiple = np.rint(cell @ np.linalg.inv(ref)).astype(int)
        det = round(np.linalg.det(multiple))
        if det == 0 or abs(det) * reference.n_atoms != n_atoms:
            continue
        deformation = np.linalg.solve(multiple @ ref, cell)  # cell = (M @ ref) @ D
        strain = np.abs(np.linalg.eigvalsh(0.5 * (deformation @ deformation.T - np.eye(3)))).max()
        if strain <= max_strain and (best is None or strain < best[0]):
            best = (strain, i, multiple)
    return None if best is None else (best[1], best[2])


def frame_kpoints(frame: Frame, references: Sequence[MeshReference]) -> Kpoints | None:
    """The reference mesh for ``frame``; None when no reference fits or the supercell is not diagonal."""
    found = match_reference(np.asarray(frame.cell), frame.n_atoms, references)
    if found is None:
        return None
    index, multiple = found
    if np.count_nonzero(multiple - np.diag(np.diag(multiple))) or np.any(np.diag(multiple) <= 0):
        return None
    return references[index].kpoints(np.diag(multiple).tolist())


def with_kpoints(static_maker: Maker, kpoints: Kpoints) -> Maker:
    """A copy of ``static_maker`` whose input-set generator uses the fixed mesh ``kpoints``."""
    generator = dataclasses.replace(_generator(static_maker), user_kpoints_settings=kpoints)
    return dataclasses.replace(static_maker, input_set_generator=generator)


def pinned_makers(static_maker: Maker, frames: Sequence[Frame], references: Sequence[MeshReference]) -> list[Maker]:
    """The static Maker for each frame: ``static_maker`` with its frame's reference mesh fixed.

    Frames that match no reference (see :func:`match_reference`) keep ``static_maker`` and its own
    automatic mesh (a warning says how many). Frames with the same mesh share one Maker object.

    Returns
    -------
    list[Maker]: one per frame, in order.
    """
    if not references:
        return [static_maker] * len(frames)
    by_mesh: dict[tuple, Maker] = {}
    makers, unmatched = [], 0
    for frame in frames:
        kpoints = frame_kpoints(frame, references)
        if kpoints is None:
            unmatched += 1
            makers.append(static_maker)
            continue
        key = (kpoints.style.name, tuple(kpoints.kpts[0]), tuple(kpoints.kpts_shift))
        if key not in by_mesh:
            by_mesh[key] = with_kpoints(static_maker, kpoints)
        makers.append(by_mesh[key])
    if unmatched:
        logger.warning("%d of %d frames match no reference cell: they keep their own automatic k-point mesh",
                       unmatched, len(frames))
    return makers
