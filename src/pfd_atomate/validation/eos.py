"""Energy-volume curves of given phases, model vs reference, with a Birch-Murnaghan fit.

Each phase is scaled isotropically (fixed cell shape and fractional coordinates, unless
``relax_positions``) over a range of volumes around its input volume; the energy per atom is
fitted with pymatgen's third-order Birch-Murnaghan equation of state
(:class:`pymatgen.analysis.eos.BirchMurnaghan`), giving the equilibrium volume ``V0``
(Å^3/atom), energy ``E0`` (eV/atom), bulk modulus ``B0`` (GPa) and its pressure derivative
``B0'``. Comparing a model with a reference calculator on the same phases shows whether
the model gets the equilibrium densities, stiffness and the energy ordering of the phases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from pfd_atomate.data import Frame
from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

#: default linear strains: volumes from 0.94^3 to 1.06^3 of the input volume (about -17 % .. +19 %)
DEFAULT_STRAINS = tuple(np.round(np.linspace(-0.06, 0.06, 9), 6))


class EOSFit(BaseModel):
    """Energy-volume curve of one phase with one calculator and its Birch-Murnaghan fit.

    Attributes
    ----------
    phase: phase name.
    calculator: calculator name.
    n_atoms: atoms in the cell.
    volumes: volume per atom of each point, shape (n_points,), Å^3/atom.
    energies: energy per atom of each point, shape (n_points,), eV/atom.
    v0: equilibrium volume, Å^3/atom.
    e0: energy at ``v0``, eV/atom.
    b0: bulk modulus at ``v0``, GPa.
    b0_prime: pressure derivative of the bulk modulus (dimensionless).
    fit_rmse: RMSE of the fit over the points, eV/atom.
    """

    phase: str
    calculator: str
    n_atoms: int
    volumes: list[float]
    energies: list[float]
    v0: float
    e0: float
    b0: float
    b0_prime: float
    fit_rmse: float


class EOSComparison(BaseModel):
    """Model vs reference energy-volume curves of several phases.

    Attributes
    ----------
    model, reference: fits per phase name.
    v0_error_percent: ``100 (V0_model - V0_ref) / V0_ref`` per phase.
    b0_error_gpa: ``B0_model - B0_ref`` per phase, GPa.
    phase_energy_model, phase_energy_reference: ``E0`` of each phase minus the lowest ``E0``
        of that calculator, eV/atom (the phase ordering; independent of each calculator's
        energy zero).
    phase_energy_error: model minus reference phase energy per phase, eV/atom.
    plot: path of the PNG, if one was written.
    """

    model: dict[str, EOSFit]
    reference: dict[str, EOSFit]
    v0_error_percent: dict[str, float]
    b0_error_gpa: dict[str, float]
    phase_energy_model: dict[str, float]
    phase_energy_reference: dict[str, float]
    phase_energy_error: dict[str, float]
    plot: str | None = None


def as_atoms(structure) -> Atoms:
    """ASE ``Atoms`` (without calculator) from ``Atoms``, a pymatgen ``Structure`` or a :class:`Frame`.

    Raises
    ------
    TypeError: any other type.
    """
    from ase import Atoms
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(structure, Atoms):
        atoms = structure.copy()
        atoms.calc = None
        return atoms
    if isinstance(structure, Structure):
        return AseAtomsAdaptor.get_atoms(structure)
    if isinstance(structure, Frame):
        return structure.to_atoms(with_labels=False)
    if isinstance(structure, Mapping) and "lattice" in structure:  # a serialized Structure from a JobStore
        return AseAtomsAdaptor.get_atoms(Structure.from_dict(structure))
    raise TypeError(f"expected ase.Atoms, pymatgen Structure or Frame, got {type(structure).__name__}")


def _check_strains(strains: Sequence[float]) -> np.ndarray:
    strains = np.asarray(strains, dtype=float)
    if strains.ndim != 1 or len(strains) < 5:
        raise ValueError(f"need at least 5 strains for a 4-parameter Birch-Murnaghan fit, got {strains.size}")
    if np.any(strains <= -0.5) or np.any(strains >= 0.5):
        raise ValueError(f"linear strains must lie in (-0.5, 0.5), got {strains.min()}..{strains.max()}")
    if len(np.unique(np.round(strains, 10))) != len(strains):
        raise ValueError("strains must be distinct")
    return strains


def energy_volume_curve(
    structure,
    calculator: Calculator,
    strains: Sequence[float] = DEFAULT_STRAINS,
    phase: str = "",
    calculator_name: str = "",
    relax_positions: bool = False,
    fmax: float = 0.01,
) -> EOSFit:
    """Energy-volume curve of one phase and its third-order Birch-Murnaghan fit.

    Parameters
    ----------
    structure: the phase (``Atoms``, ``Structure`` or :class:`Frame`), periodic in 3D.
    calculator: ASE calculator.
    strains: linear strains ``s``; the cell is scaled by ``1 + s`` (volume by ``(1 + s)^3``),
        at least 5 distinct values in (-0.5, 0.5).
    phase, calculator_name: names stored in the result.
    relax_positions: relax the atomic positions at each fixed cell (ASE BFGS) - needed
        for phases with internal degrees of freedom (e.g. hcp, wurtzite); the cell shape
        is never relaxed.
    fmax: force threshold of that relaxation, eV/Å.

    Returns
    -------
    EOSFit with volumes (Å^3/atom), energies (eV/atom), V0, E0, B0 (GPa) and B0'.

    Raises
    ------
    ValueError: too few or out-of-range strains, a non-periodic structure, or a fit
        whose minimum lies outside the sampled volumes (the range must bracket it).
    """
    from pymatgen.analysis.eos import EOS, EOSError

    strains = _check_strains(strains)
    base = as_atoms(structure)
    if not all(base.pbc):
        raise ValueError(f"phase {phase!r}: an equation of state needs a cell periodic in 3D")
    n_atoms = len(base)
    volumes, energies = [], []
    for s in strains:
        atoms = base.copy()
        atoms.set_cell(base.cell.array * (1.0 + s), scale_atoms=True)
        atoms.calc = calculator
        if relax_positions:
            from ase.optimize import BFGS

            BFGS(atoms, logfile=None).run(fmax=fmax, steps=200)
        volumes.append(atoms.get_volume() / n_atoms)
        energies.append(atoms.get_potential_energy() / n_atoms)
    volumes_arr, energies_arr = np.array(volumes), np.array(energies)
    where = (f"phase {phase!r} with {calculator_name or 'the calculator'}: the energy minimum lies outside the "
             f"sampled volumes {volumes_arr.min():.3f}..{volumes_arr.max():.3f} Å^3/atom; "
             "start nearer the equilibrium or widen the strains")
    try:
        fit = EOS("birch_murnaghan").fit(volumes_arr, energies_arr)
    except EOSError as err:  # pymatgen's initial parabola already has its minimum outside the range
        raise ValueError(where) from err
    if not volumes_arr.min() < fit.v0 < volumes_arr.max():
        raise ValueError(where)
    residual = energies_arr - np.asarray(fit.func(volumes_arr))
    return EOSFit(
        phase=phase,
        calculator=calculator_name,
        n_atoms=n_atoms,
        volumes=volumes_arr.tolist(),
        energies=energies_arr.tolist(),
        v0=float(fit.v0),
        e0=float(fit.e0),
        b0=float(fit.b0_GPa),
        b0_prime=float(fit.b1),
        fit_rmse=float(np.sqrt(np.mean(residual**2))),
    )


def compare_eos(
    phases: Mapping[str, object],
    model: Calculator,
    reference: Calculator,
    strains: Sequence[float] = DEFAULT_STRAINS,
    model_name: str = "model",
    reference_name: str = "reference",
    relax_positions: bool = False,
    plot_path: str | Path | None = None,
) -> EOSComparison:
    """Energy-volume curves of every phase with a model and a reference calculator.

    Parameters
    ----------
    phases: phase name → structure (``Atoms``, ``Structure`` or :class:`Frame`), each
        near its reference equilibrium volume.
    model, reference: ASE calculators.
    strains: linear strains (see :func:`energy_volume_curve`).
    model_name, reference_name: labels in the result and the plot.
    relax_positions: relax atomic positions at each volume.
    plot_path: write the curves as a PNG here (see :func:`plot_eos`).

    Returns
    -------
    EOSComparison (per phase: fits, V0 error in %, B0 error in GPa, phase energies).

    Raises
    ------
    ValueError: no phases, bad strains, a fit minimum outside the sampled range, or equal
        model and reference names.
    """
    if model_name == reference_name:
        raise ValueError(f"model and reference need different names, both are {model_name!r}")
    if not phases:
        raise ValueError("compare_eos: no phases given")
    strains = _check_strains(strains)
    for name, structure in phases.items():  # fail on bad input before any energy is computed
        if not all(as_atoms(structure).pbc):
            raise ValueError(f"phase {name!r}: an equation of state needs a cell periodic in 3D")
    fits_model = {
        name: energy_volume_curve(s, model, strains, name, model_name, relax_positions) for name, s in phases.items()
    }
    fits_ref = {
        name: energy_volume_curve(s, reference, strains, name, reference_name, relax_positions)
        for name, s in phases.items()
    }
    e_min_model = min(f.e0 for f in fits_model.values())
    e_min_ref = min(f.e0 for f in fits_ref.values())
    phase_model = {n: f.e0 - e_min_model for n, f in fits_model.items()}
    phase_ref = {n: f.e0 - e_min_ref for n, f in fits_ref.items()}
    result = EOSComparison(
        model=fits_model,
        reference=fits_ref,
        v0_error_percent={n: 100.0 * (fits_model[n].v0 - fits_ref[n].v0) / fits_ref[n].v0 for n in phases},
        b0_error_gpa={n: fits_model[n].b0 - fits_ref[n].b0 for n in phases},
        phase_energy_model=phase_model,
        phase_energy_reference=phase_ref,
        phase_energy_error={n: phase_model[n] - phase_ref[n] for n in phases},
    )
    if plot_path is not None:
        result.plot = str(plot_eos(result, plot_path, model_name=model_name, reference_name=reference_name))
    return result


def plot_eos(
    comparison: EOSComparison, path: str | Path, model_name: str = "model", reference_name: str = "reference"
) -> Path:
    """Plot the energy-volume curves of a comparison (one colour per phase).

    Energies are relative to each calculator's lowest ``E0`` (so the two calculators'
    energy zeros need not agree); points are the computed energies, lines the fits.
    Reference: solid lines and circles; model: dashed lines and crosses.

    Returns
    -------
    The path written.
    """
    plt = pyplot()
    from pymatgen.analysis.eos import EOS

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for which, fits, style, marker in (
        (reference_name, comparison.reference, "-", "o"),
        (model_name, comparison.model, "--", "x"),
    ):
        e_min = min(f.e0 for f in fits.values())
        for i, (name, fit) in enumerate(fits.items()):
            v, e = np.asarray(fit.volumes), np.asarray(fit.energies)
            curve = EOS("birch_murnaghan").fit(v, e)
            grid = np.linspace(v.min(), v.max(), 200)
            colour = colours[i % len(colours)]
            ax.plot(v, e - e_min, marker, color=colour, ms=5, mfc="none")
            ax.plot(grid, np.asarray(curve.func(grid)) - e_min, style, color=colour,
                    label=f"{name} {which}: V0 {fit.v0:.2f} Å³, B0 {fit.b0:.0f} GPa")
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("E - E0,min (eV/atom)")
    ax.set_title("energy-volume curves (Birch-Murnaghan fits)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
