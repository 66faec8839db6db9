"""MD stability check: an NVE run that must keep atoms apart and conserve energy.

A force field that is unstable in MD either lets atoms collapse onto each other (holes in
the training data at short range) or does not conserve energy (forces that are not the
gradient of the energy, discontinuities, or a time step too long for the model's
stiffest mode). The run is atomate2's velocity-Verlet NVE (``ForceFieldMDMaker``, see
:class:`~pfd_atomate.validation.jobs.MDStabilityMaker`) from Maxwell-Boltzmann velocities;
:func:`analyse_nve` reads its trajectory, sampled every ``interval`` steps, and fails it when

- any pair of atoms comes closer than ``min_distance`` Å (the analysis ends at that sample), or
- the energy drift, the slope of a least-squares line through the total energy per atom
  against time, exceeds ``max_drift`` in eV/atom/ps (in magnitude).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

#: default share of the sum of covalent radii below which a pair counts as collapsed
COVALENT_FRACTION = 0.6
#: default largest acceptable |energy drift|, eV/atom/ps
DEFAULT_MAX_DRIFT = 0.005


class MDStabilityResult(BaseModel):
    """Outcome of :func:`analyse_nve`.

    Attributes
    ----------
    stable: no collapsed pair and ``|energy_drift| <= max_drift``.
    reason: why the run is unstable ("" when stable).
    n_atoms: atoms simulated.
    n_steps_requested, n_steps_run: MD steps run and analysed (up to the first collapsed sample).
    time_step: fs.
    temperature: initial Maxwell-Boltzmann temperature, K.
    min_distance: collapse threshold, Å.
    max_drift: drift threshold, eV/atom/ps.
    energy_drift: slope of total energy per atom vs time, eV/atom/ps.
    max_energy_deviation: largest |E(t) - E(0)| per atom, eV/atom.
    min_pair_distance: shortest interatomic distance seen, Å.
    times: sample times, shape (n_samples,), ps.
    total_energy: total energy per atom at each sample, shape (n_samples,), eV/atom.
    temperatures: kinetic temperature at each sample, shape (n_samples,), K.
    pair_distance: shortest interatomic distance at each sample, shape (n_samples,), Å.
    """

    stable: bool
    reason: str
    n_atoms: int
    n_steps_requested: int
    n_steps_run: int
    time_step: float
    temperature: float
    min_distance: float
    max_drift: float
    energy_drift: float
    max_energy_deviation: float
    min_pair_distance: float
    times: list[float]
    total_energy: list[float]
    temperatures: list[float]
    pair_distance: list[float]


def default_min_distance(symbols: list[str], fraction: float = COVALENT_FRACTION) -> float:
    """``fraction`` × the smallest sum of covalent radii over the element pairs present, Å.

    For Cu (r_cov 1.32 Å) with the default 0.6 this is 1.58 Å (nearest neighbours in fcc Cu:
    2.55 Å); for Si 1.33 Å (bond 2.35 Å).
    """
    from ase.data import atomic_numbers, covalent_radii

    # the smallest pair sum is the smallest element with itself (periodic images always pair)
    smallest = 2.0 * min(covalent_radii[atomic_numbers[s]] for s in set(symbols))
    return float(fraction * smallest)


def min_pair_distance(atoms: Atoms, cutoff: float) -> float:
    """Shortest interatomic distance (minimum image), Å; ``inf`` if no pair is within ``cutoff`` Å."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff, self_interaction=False)
    return float(d.min()) if len(d) else float("inf")


def nve_start(structure: Structure, n_steps: int, time_step: float, temperature: float, max_drift: float,
              interval: int, min_distance: float | None = None, seed: int = 0) -> tuple[Structure, float]:
    """Check the settings; ``structure`` with Maxwell-Boltzmann velocities and the collapse threshold (Å).

    The velocities (``temperature`` K, seeded by ``seed``, centre-of-mass motion removed) are the site
    property ``velocities``, shape (n_atoms, 3), Å per ASE time unit (10.18 fs): atomate2's MD hands it to
    ``Atoms.set_velocities``; its NVE ignores ``temperature`` (and ``mb_velocity_seed``) and starts at rest.

    Raises
    ------
    ValueError: non-positive ``time_step``/``max_drift``/``min_distance``, negative ``temperature``,
        ``interval < 1`` or ``n_steps < 2 * interval``, or a pair already closer than ``min_distance``.
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from pymatgen.io.ase import AseAtomsAdaptor

    if not time_step > 0:
        raise ValueError(f"time_step must be > 0 fs, got {time_step}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature}")
    if not max_drift > 0:
        raise ValueError(f"max_drift must be > 0 eV/atom/ps, got {max_drift}")
    if interval < 1 or n_steps < 2 * interval:
        raise ValueError(f"need interval >= 1 and n_steps >= 2 * interval, got n_steps={n_steps}, interval={interval}")
    atoms = AseAtomsAdaptor.get_atoms(structure)
    threshold = default_min_distance(atoms.get_chemical_symbols()) if min_distance is None else float(min_distance)
    if not threshold > 0:
        raise ValueError(f"min_distance must be > 0 Å, got {min_distance}")
    if (start := min_pair_distance(atoms, threshold)) < threshold:
        raise ValueError(f"the starting structure already has atoms {start:.3f} Å apart (< {threshold} Å)")
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return structure.copy(site_properties={"velocities": atoms.get_velocities().tolist()}), threshold


def analyse_nve(numbers, positions, cells, energies, temperatures, *, time_step: float, interval: int,
                n_steps: int, temperature: float, min_distance: float, max_drift: float) -> MDStabilityResult:
    """Pair distances and energy conservation of an NVE trajectory sampled every ``interval`` steps from step 0.

    Parameters
    ----------
    numbers: atomic numbers, shape (n_atoms,).
    positions: Cartesian positions, shape (n_samples, n_atoms, 3), Å.
    cells: cell rows, shape (n_samples, 3, 3), Å (periodic in 3D).
    energies: potential energy of the cell, shape (n_samples,), eV.
    temperatures: kinetic temperature (ASE's ``get_temperature``), shape (n_samples,), K.
    time_step: fs; n_steps: steps run; temperature: initial temperature, K (reported only).
    min_distance: collapse threshold, Å; max_drift: largest acceptable |drift|, eV/atom/ps.

    Raises
    ------
    ValueError: arrays of different lengths n_samples.
    """
    from ase import Atoms, units

    numbers = np.asarray(numbers)
    # ASE's temperature is 2 E_kin / (3 N k_B), so this is its E_kin per atom (unconstrained cell)
    e = np.asarray(energies, float) / len(numbers) + 1.5 * units.kB * np.asarray(temperatures, float)
    # distances only matter below the threshold; look a little further to report the minimum
    search = max(2.0 * min_distance, 3.0)
    dists = np.array([min_pair_distance(Atoms(numbers, positions=p, cell=c, pbc=True), search)
                      for p, c in zip(positions, cells, strict=True)])
    # the run goes on after a collapse (atoms on top of each other): analyse up to the first collapsed sample
    bad = np.flatnonzero((dists < min_distance) | ~np.isfinite(e))
    n = int(bad[0]) + 1 if len(bad) else len(e)
    e, dists, temps = e[:n], dists[:n], np.asarray(temperatures, float)[:n]
    t = np.arange(n) * interval * time_step / 1000.0
    n_run = (n - 1) * interval if len(bad) else n_steps
    finite = np.isfinite(e)
    drift = float(np.polyfit(t[finite], e[finite], 1)[0]) if finite.sum() >= 2 else float("inf")
    deviation = float(np.max(np.abs(e[finite] - e[0]))) if finite.any() else float("inf")
    reasons = [f"atoms {dists.min():.3f} Å apart (< {min_distance:.3f} Å) after {n_run} steps"] if len(bad) else []
    if not abs(drift) <= max_drift:
        reasons.append(f"energy drift {drift:.3g} eV/atom/ps exceeds {max_drift:g}")
    return MDStabilityResult(
        stable=not reasons, reason="; ".join(reasons), n_atoms=len(numbers), n_steps_requested=n_steps,
        n_steps_run=n_run, time_step=time_step, temperature=temperature, min_distance=min_distance,
        max_drift=max_drift, energy_drift=drift, max_energy_deviation=deviation, min_pair_distance=dists.min(),
        times=t.tolist(), total_energy=e.tolist(), temperatures=temps.tolist(), pair_distance=dists.tolist(),
    )


def plot_md_stability(results: dict[str, MDStabilityResult], path: str | Path) -> Path:
    """Total energy drift (E - E(0), meV/atom) and shortest pair distance (Å) vs time, one line per run.

    Returns
    -------
    The path written.
    """
    plt = pyplot()

    fig, (ax_e, ax_d) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, res in results.items():
        e = np.asarray(res.total_energy)
        status = "stable" if res.stable else "UNSTABLE"
        ax_e.plot(res.times, 1000.0 * (e - e[0]),
                  label=f"{name} ({res.time_step:g} fs): drift {1000 * res.energy_drift:.2f} meV/atom/ps, {status}")
        ax_d.plot(res.times, res.pair_distance, label=name)
        ax_d.axhline(res.min_distance, color="0.5", ls=":", lw=0.8)
    ax_e.set_xlabel("time (ps)")
    ax_e.set_ylabel("E_total - E_total(0) (meV/atom)")
    ax_e.legend(fontsize=7)
    ax_d.set_xlabel("time (ps)")
    ax_d.set_ylabel("shortest pair distance (Å)")
    ax_d.legend(fontsize=7)
    fig.suptitle("NVE stability")
    return save_figure(fig, path)
