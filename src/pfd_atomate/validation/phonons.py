"""Phonon band structures by finite displacements (phonopy), model vs reference.

Both calculators see the same structure, the same supercell, the same displaced supercells
and the same q-point path, so their band structures can be compared branch by branch. The
band RMSE is the autoplex measure (Ertural et al., "Phonon-accurate machine-learning
potentials from automated workflows", SI Table 1; autoplex ``get_rmse``): the root mean
square difference of the phonon frequencies over all branches at all q-points of the path,
in THz, ``sqrt(mean((ω_model - ω_ref)^2))``.

The q-point path is pymatgen's high-symmetry path (Setyawan-Curtarolo) of the standard
primitive cell, which is also the cell phonopy works in, so q-points need no conversion.
Phonopy's convention is kept: imaginary modes are reported as negative frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from pfd_atomate.validation.eos import as_atoms
from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

#: displacement of phonopy's finite-displacement supercells, Å (autoplex benchmark setting)
DEFAULT_DISPLACEMENT = 0.01


class BandPath(BaseModel):
    """A q-point path through the Brillouin zone of the primitive cell.

    Attributes
    ----------
    segments: q-points per segment, each of shape (n_q, 3), reduced coordinates of the
        primitive reciprocal lattice.
    connections: whether segment i is continuous with segment i + 1 (phonopy convention).
    labels: high-symmetry point labels along the path (phonopy convention: one label per
        segment start plus one per discontinuity and the end).
    lattice: lattice vectors (rows, Å) of the primitive cell the reduced coordinates refer to.
    """

    segments: list[list[list[float]]]
    connections: list[bool]
    labels: list[str]
    lattice: list[list[float]]


class PhononBands(BaseModel):
    """Phonon band structure of one calculator along a :class:`BandPath`.

    Attributes
    ----------
    calculator: calculator name.
    distances: path coordinate per segment, each of shape (n_q,), 1/Å (phonopy's
        distances in the reciprocal lattice without 2π).
    frequencies: per segment, shape (n_q, n_branches), THz (negative = imaginary).
    n_displacements: displaced supercells computed.
    supercell_matrix: 3x3 integer matrix of the supercell relative to the primitive cell.
    """

    calculator: str
    distances: list[list[float]]
    frequencies: list[list[list[float]]]
    n_displacements: int
    supercell_matrix: list[list[int]]

    def all_frequencies(self) -> np.ndarray:
        """Frequencies of every q-point of the path, shape (n_q_total, n_branches), THz."""
        return np.concatenate([np.asarray(f) for f in self.frequencies])


class PhononComparison(BaseModel):
    """Model vs reference phonon band structures.

    Attributes
    ----------
    model, reference: the two band structures.
    path: the shared q-point path.
    band_rmse: autoplex band RMSE over all branches and q-points, THz.
    max_abs_error: largest absolute frequency difference, THz.
    gamma_acoustic_max: largest |ω| of the three lowest modes at Γ, per calculator name, THz
        (should be ~0: translational invariance).
    min_frequency: lowest frequency on the path per calculator name, THz (< 0: imaginary modes).
    plot: path of the PNG, if written.
    """

    model: PhononBands
    reference: PhononBands
    path: BandPath
    band_rmse: float
    max_abs_error: float
    gamma_acoustic_max: dict[str, float]
    min_frequency: dict[str, float]
    plot: str | None = None


def primitive_cell(structure) -> Atoms:
    """Standard primitive cell (pymatgen/Setyawan-Curtarolo convention) of a structure, as ``Atoms``."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.bandstructure import HighSymmKpath

    kpath = HighSymmKpath(AseAtomsAdaptor.get_structure(as_atoms(structure)))
    return AseAtomsAdaptor.get_atoms(kpath.prim)


def band_path(structure, npoints: int = 51) -> BandPath:
    """High-symmetry q-point path of the standard primitive cell of ``structure``.

    Parameters
    ----------
    structure: any cell of the crystal (``Atoms``, ``Structure`` or Frame).
    npoints: q-points per segment, including both ends (>= 2).

    Raises
    ------
    ValueError: ``npoints < 2``.
    """
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.bandstructure import HighSymmKpath

    if npoints < 2:
        raise ValueError(f"npoints must be >= 2, got {npoints}")
    high_symm = HighSymmKpath(AseAtomsAdaptor.get_structure(as_atoms(structure)))
    kpath = high_symm.kpath
    points = kpath["kpoints"]
    branches = [[np.asarray(points[label], dtype=float) for label in branch] for branch in kpath["path"]]
    qpoints, connections = get_band_qpoints_and_path_connections(branches, npoints=npoints)
    labels: list[str] = []
    for branch in kpath["path"]:
        labels.extend(_pretty(label) for label in branch)
    return BandPath(
        segments=[np.asarray(q).tolist() for q in qpoints],
        connections=[bool(c) for c in connections],
        labels=labels,
        lattice=np.asarray(high_symm.prim.lattice.matrix).tolist(),
    )


def _pretty(label: str) -> str:
    return "Γ" if label in ("\\Gamma", "Gamma", "GAMMA", "G") else label.replace("\\Sigma", "Σ").replace("_", "")


def supercell_matrix_for(primitive: Atoms, min_length: float) -> list[list[int]]:
    """Diagonal supercell whose three perpendicular widths are each at least ``min_length`` Å.

    The width along cell vector i is the distance between the two cell faces that vector
    i crosses, ``V / |a_j x a_k|``; it bounds the largest sphere the cell holds.

    Raises
    ------
    ValueError: ``min_length <= 0``.
    """
    if not min_length > 0:
        raise ValueError(f"min_length must be > 0 Å, got {min_length}")
    cell = primitive.cell.array
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    reps = [max(1, int(np.ceil(min_length / w - 1e-8))) for w in widths]
    return np.diag(reps).astype(int).tolist()


def phonon_bands(
    structure,
    calculator: Calculator,
    path: BandPath | None = None,
    supercell_matrix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    min_length: float = 10.0,
    displacement: float = DEFAULT_DISPLACEMENT,
    subtract_residual_forces: bool = True,
    symmetrize_force_constants: bool = False,
    calculator_name: str = "",
) -> PhononBands:
    """Harmonic phonon band structure by phonopy finite displacements.

    The structure is reduced to its standard primitive cell (phonopy's unit cell, with
    ``primitive_matrix=None``); phonopy generates the symmetry-irreducible displaced
    supercells, ``calculator`` gives their forces, and the force constants are built and
    evaluated along ``path``.

    Parameters
    ----------
    structure: crystal (``Atoms``, ``Structure`` or Frame); should be relaxed with the
        reference calculator, otherwise imaginary modes may appear.
    calculator: ASE calculator.
    path: q-point path (default: :func:`band_path` of ``structure``).
    supercell_matrix: supercell of the primitive cell, 3 integers (diagonal) or 3x3;
        default :func:`supercell_matrix_for` with ``min_length``.
    min_length: minimum perpendicular width of the default supercell, Å.
    displacement: atomic displacement, Å.
    subtract_residual_forces: subtract the forces of the undisplaced supercell from every
        displaced one (phonopy ``--fz``), which removes the first-order error when the
        structure is not exactly at the calculator's equilibrium (one extra force call).
    symmetrize_force_constants: impose the acoustic sum rule and index symmetry on the
        force constants; off by default so that a model that breaks translational
        invariance shows non-zero acoustic modes at Γ.
    calculator_name: name stored in the result.

    Returns
    -------
    PhononBands with frequencies in THz per path segment.

    Raises
    ------
    ValueError: bad ``supercell_matrix``, ``displacement <= 0``, non-periodic structure,
        or a ``path`` made for another cell.
    """
    from ase import Atoms
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    if not displacement > 0:
        raise ValueError(f"displacement must be > 0 Å, got {displacement}")
    atoms = as_atoms(structure)
    if not all(atoms.pbc):
        raise ValueError("phonons need a crystal periodic in 3D")
    primitive = primitive_cell(atoms)
    matrix = _supercell_matrix(supercell_matrix, primitive, min_length)
    path = path if path is not None else band_path(primitive)
    # reduced q-points only mean something in the reciprocal lattice they were made for
    if not np.allclose(path.lattice, primitive.cell.array, atol=1e-4):
        raise ValueError("the band path was made for another primitive cell; build it with band_path(structure)")

    unitcell = PhonopyAtoms(
        symbols=primitive.get_chemical_symbols(),
        cell=primitive.cell.array,
        scaled_positions=primitive.get_scaled_positions(),
    )
    phonon = Phonopy(unitcell, supercell_matrix=matrix, primitive_matrix=None)
    phonon.generate_displacements(distance=displacement)

    def forces_of(cell: PhonopyAtoms) -> np.ndarray:
        sc = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        sc.calc = calculator
        return np.asarray(sc.get_forces(), dtype=float)

    displaced = phonon.supercells_with_displacements
    forces = np.array([forces_of(sc) for sc in displaced])
    if subtract_residual_forces:
        forces = forces - forces_of(phonon.supercell)[None]
    phonon.forces = forces
    phonon.produce_force_constants()
    if symmetrize_force_constants:
        phonon.symmetrize_force_constants()
    phonon.run_band_structure(
        [np.asarray(q) for q in path.segments], path_connections=path.connections, labels=path.labels
    )
    bands = phonon.get_band_structure_dict()
    return PhononBands(
        calculator=calculator_name,
        distances=[np.asarray(d).tolist() for d in bands["distances"]],
        frequencies=[np.asarray(f).tolist() for f in bands["frequencies"]],
        n_displacements=len(displaced),
        supercell_matrix=np.asarray(matrix, dtype=int).tolist(),
    )


def _supercell_matrix(matrix, primitive: Atoms, min_length: float) -> list[list[int]]:
    if matrix is None:
        return supercell_matrix_for(primitive, min_length)
    m = np.asarray(matrix)
    if m.shape == (3,):
        m = np.diag(m)
    if m.shape != (3, 3) or not np.allclose(m, np.round(m)) or round(abs(np.linalg.det(m))) < 1:
        raise ValueError(f"supercell_matrix must be 3 integers or a 3x3 integer matrix with det >= 1, got {matrix}")
    return np.round(m).astype(int).tolist()


def band_rmse(model: PhononBands, reference: PhononBands) -> float:
    """autoplex band RMSE, ``sqrt(mean((ω_model - ω_ref)^2))`` over all branches and q-points, THz.

    Raises
    ------
    ValueError: the band structures have different shapes (other path or structure).
    """
    a, b = model.all_frequencies(), reference.all_frequencies()
    if a.shape != b.shape:
        raise ValueError(f"band structures differ in shape: {a.shape} vs {b.shape}; use the same structure and path")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def gamma_acoustic_max(bands: PhononBands, path: BandPath) -> float:
    """Largest |ω| (THz) of the three lowest modes over the path's Γ points.

    Raises
    ------
    ValueError: the path has no Γ point.
    """
    freqs = []
    for seg_q, seg_f in zip(path.segments, bands.frequencies, strict=True):
        for q, f in zip(seg_q, seg_f, strict=True):
            if np.allclose(q, 0.0, atol=1e-8):
                freqs.append(np.sort(np.asarray(f))[:3])
    if not freqs:
        raise ValueError("the q-point path does not pass through Γ")
    return float(np.max(np.abs(freqs)))


def compare_phonons(
    structure,
    model: Calculator,
    reference: Calculator,
    supercell_matrix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    min_length: float = 10.0,
    displacement: float = DEFAULT_DISPLACEMENT,
    npoints: int = 51,
    model_name: str = "model",
    reference_name: str = "reference",
    plot_path: str | Path | None = None,
    **kwargs,
) -> PhononComparison:
    """Phonon band structures of a model and a reference on the same structure, path and supercell.

    Parameters
    ----------
    structure: crystal, relaxed with the reference.
    model, reference: ASE calculators.
    supercell_matrix, min_length, displacement: see :func:`phonon_bands`.
    npoints: q-points per path segment.
    model_name, reference_name: labels in the result and plot.
    plot_path: write the two band structures as a PNG here (see :func:`plot_phonon_bands`).
    **kwargs: passed to :func:`phonon_bands` (``subtract_residual_forces``,
        ``symmetrize_force_constants``).

    Returns
    -------
    PhononComparison with the autoplex band RMSE (THz).

    Raises
    ------
    ValueError: bad input (see :func:`phonon_bands`) or equal model and reference names.
    """
    if model_name == reference_name:
        raise ValueError(f"model and reference need different names, both are {model_name!r}")
    primitive = primitive_cell(structure)
    matrix = _supercell_matrix(supercell_matrix, primitive, min_length)
    path = band_path(primitive, npoints=npoints)
    ref = phonon_bands(primitive, reference, path, matrix, displacement=displacement,
                       calculator_name=reference_name, **kwargs)
    mod = phonon_bands(primitive, model, path, matrix, displacement=displacement, calculator_name=model_name, **kwargs)
    diff = mod.all_frequencies() - ref.all_frequencies()
    result = PhononComparison(
        model=mod,
        reference=ref,
        path=path,
        band_rmse=band_rmse(mod, ref),
        max_abs_error=float(np.max(np.abs(diff))),
        gamma_acoustic_max={model_name: gamma_acoustic_max(mod, path), reference_name: gamma_acoustic_max(ref, path)},
        min_frequency={model_name: float(mod.all_frequencies().min()), reference_name: float(ref.all_frequencies().min())},
    )
    if plot_path is not None:
        result.plot = str(plot_phonon_bands(result, plot_path))
    return result


def plot_phonon_bands(comparison: PhononComparison, path: str | Path, title: str = "") -> Path:
    """Plot reference (solid) and model (dashed) band structures on one axis, with the band RMSE.

    Returns
    -------
    The path written.
    """
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for bands, style, colour in ((comparison.reference, "-", "k"), (comparison.model, "--", "tab:red")):
        for i, (x, f) in enumerate(zip(bands.distances, bands.frequencies, strict=True)):
            lines = ax.plot(x, f, style, color=colour, lw=1.0)
            if i == 0:
                lines[0].set_label(bands.calculator)  # one legend entry per calculator, not per branch
    # one tick per high-symmetry point; where the path jumps, two labels share an x ("X|K")
    ticks: list[tuple[float, str]] = []
    labels = iter(comparison.path.labels)
    for i, x in enumerate(comparison.reference.distances):
        if i == 0 or not comparison.path.connections[i - 1]:
            start = next(labels, "")
            if ticks and abs(ticks[-1][0] - x[0]) < 1e-8:
                ticks[-1] = (x[0], f"{ticks[-1][1]}|{start}")
            else:
                ticks.append((x[0], start))
        ticks.append((x[-1], next(labels, "")))
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([n for _, n in ticks])
    for t, _ in ticks:
        ax.axvline(t, color="0.8", lw=0.6)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlim(comparison.reference.distances[0][0], comparison.reference.distances[-1][-1])
    ax.set_ylabel("frequency (THz)")
    ax.set_title(title or f"phonon bands: band RMSE {comparison.band_rmse:.3f} THz")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
