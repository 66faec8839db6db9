"""Energy-volume curves of given phases, model vs reference, with a Birch-Murnaghan fit.

Each phase runs atomate2's equation-of-state flow (:class:`~atomate2.common.flows.eos.CommonEosMaker`;
the force-field one for models, the same flow with CP2K static jobs for the reference): the cell is
scaled isotropically over linear strains around the input cell (fixed shape and fractional
coordinates, unless positions are relaxed at each volume) and each point is one atomate2 job. The
energy per atom is fitted with pymatgen's third-order Birch-Murnaghan equation of state
(:class:`pymatgen.analysis.eos.BirchMurnaghan`), giving the equilibrium volume ``V0`` (Å^3/atom),
energy ``E0`` (eV/atom), bulk modulus ``B0`` (GPa) and its pressure derivative ``B0'``. Comparing a
model with a reference on the same phases shows whether the model gets the equilibrium densities,
stiffness and the energy ordering of the phases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from jobflow import Maker

#: default linear strains -6 % .. +6 % in 9 steps: volumes from 0.94^3 to 1.06^3 of the input volume
DEFAULT_LINEAR_STRAIN = (-0.06, 0.06)
DEFAULT_NUMBER_OF_FRAMES = 9


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


def force_field_eos_maker(
    linear_strain: tuple[float, float] = DEFAULT_LINEAR_STRAIN,
    number_of_frames: int = DEFAULT_NUMBER_OF_FRAMES,
    relax_positions: bool = False,
    fmax: float = 0.01,
) -> Maker:
    """atomate2's force-field EOS flow without initial relaxation or fit (the fit is :func:`fit_eos`).

    Its force field is set later (:func:`~pfd_atomate.train.with_model.point_at`), so a model and
    its reference share everything else.

    Parameters
    ----------
    linear_strain: first and last linear strain; the cell is scaled by ``1 + s`` (volume by ``(1 + s)^3``).
    number_of_frames: volumes (>= 5, for the 4-parameter fit).
    relax_positions: relax atomic positions at each fixed cell (needed for phases with internal
        degrees of freedom, e.g. hcp, wurtzite, β-Sn); the cell is never relaxed.
    fmax: force threshold of that relaxation, eV/Å.

    Raises
    ------
    ValueError: fewer than 5 frames or strains outside (-0.5, 0.5).
    """
    from atomate2.forcefields.flows.eos import ForceFieldEosMaker
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker

    check_strains(linear_strain, number_of_frames)
    point = (ForceFieldRelaxMaker(relax_cell=False, relax_kwargs={"fmax": fmax}) if relax_positions
             else ForceFieldStaticMaker())
    return ForceFieldEosMaker(initial_relax_maker=None, eos_relax_maker=point, static_maker=None,
                              linear_strain=tuple(linear_strain), number_of_frames=number_of_frames,
                              postprocessor=None)


def cp2k_eos_maker(
    static_maker: Maker | None = None,
    linear_strain: tuple[float, float] = DEFAULT_LINEAR_STRAIN,
    number_of_frames: int = DEFAULT_NUMBER_OF_FRAMES,
) -> Maker:
    """atomate2's code-agnostic EOS flow with CP2K static jobs at fixed positions, for a DFT reference.

    ``static_maker`` defaults to :func:`~pfd_atomate.label.cp2k.cp2k_static_maker` (its k-mesh suits
    8-atom Si cells; set one for other cells).

    Raises
    ------
    ValueError: see :func:`check_strains`.
    """
    from atomate2.common.flows.eos import CommonEosMaker

    from pfd_atomate.label.cp2k import cp2k_static_maker

    check_strains(linear_strain, number_of_frames)
    return CommonEosMaker(name="cp2k eos", initial_relax_maker=None, eos_relax_maker=static_maker or cp2k_static_maker(),
                          static_maker=None, linear_strain=tuple(linear_strain), number_of_frames=number_of_frames,
                          postprocessor=None)


def check_strains(linear_strain: Sequence[float], number_of_frames: int) -> None:
    """Raise ``ValueError`` unless ``number_of_frames >= 5`` and the strain range lies in (-0.5, 0.5)."""
    if number_of_frames < 5:
        raise ValueError(f"number_of_frames must be >= 5 for a 4-parameter Birch-Murnaghan fit, got {number_of_frames}")
    lo, hi = (float(x) for x in linear_strain)
    if not -0.5 < lo < hi < 0.5:
        raise ValueError(f"linear_strain must be (low, high) with -0.5 < low < high < 0.5, got {tuple(linear_strain)}")


def fit_eos(volumes: Sequence[float], energies: Sequence[float], n_atoms: int, phase: str = "",
            calculator_name: str = "") -> EOSFit:
    """Third-order Birch-Murnaghan fit of one energy-volume curve.

    Parameters
    ----------
    volumes: cell volumes, shape (n_points,), Å^3.
    energies: cell energies, shape (n_points,), eV.
    n_atoms: atoms per cell (results are per atom).
    phase, calculator_name: names stored in the result.

    Raises
    ------
    ValueError: fewer than 5 points, or a fit whose minimum lies outside the sampled volumes
        (the range must bracket it).
    """
    from pymatgen.analysis.eos import EOS, EOSError

    order = np.argsort(volumes)
    v = np.asarray(volumes, dtype=float)[order] / n_atoms
    e = np.asarray(energies, dtype=float)[order] / n_atoms
    if len(v) < 5:
        raise ValueError(f"phase {phase!r}: need at least 5 volumes for the fit, got {len(v)}")
    where = (f"phase {phase!r} with {calculator_name or 'the calculator'}: the energy minimum lies outside the "
             f"sampled volumes {v.min():.3f}..{v.max():.3f} Å^3/atom; start nearer the equilibrium or widen the strains")
    try:
        fit = EOS("birch_murnaghan").fit(v, e)
    except EOSError as err:  # pymatgen's initial parabola already has its minimum outside the range
        raise ValueError(where) from err
    if not v.min() < fit.v0 < v.max():
        raise ValueError(where)
    residual = e - np.asarray(fit.func(v))
    return EOSFit(phase=phase, calculator=calculator_name, n_atoms=n_atoms, volumes=v.tolist(), energies=e.tolist(),
                  v0=float(fit.v0), e0=float(fit.e0), b0=float(fit.b0_GPa), b0_prime=float(fit.b1),
                  fit_rmse=float(np.sqrt(np.mean(residual**2))))


def compare_fits(model: Mapping[str, EOSFit], reference: Mapping[str, EOSFit]) -> EOSComparison:
    """V0 error (%), B0 error (GPa) and phase-energy errors (eV/atom) of model fits against reference fits.

    Raises
    ------
    ValueError: no phases, or the two sides fitted different phases.
    """
    if not model or set(model) != set(reference):
        raise ValueError(f"model and reference need the same, non-empty phases; got {sorted(model)} vs {sorted(reference)}")
    e_min_model = min(f.e0 for f in model.values())
    e_min_ref = min(f.e0 for f in reference.values())
    phase_model = {n: f.e0 - e_min_model for n, f in model.items()}
    phase_ref = {n: f.e0 - e_min_ref for n, f in reference.items()}
    return EOSComparison(
        model=dict(model), reference=dict(reference),
        v0_error_percent={n: 100.0 * (model[n].v0 - reference[n].v0) / reference[n].v0 for n in model},
        b0_error_gpa={n: model[n].b0 - reference[n].b0 for n in model},
        phase_energy_model=phase_model, phase_energy_reference=phase_ref,
        phase_energy_error={n: phase_model[n] - phase_ref[n] for n in model},
    )


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
