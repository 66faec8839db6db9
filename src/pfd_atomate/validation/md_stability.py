"""MD stability check: an NVE run that must keep atoms apart and conserve energy.

A force field that is unstable in MD either lets atoms collapse onto each other (holes in
the training data at short range) or does not conserve energy (forces that are not the
gradient of the energy, discontinuities, or a time step too long for the model's
stiffest mode). The check runs velocity-Verlet NVE from Maxwell-Boltzmann velocities and
records, every ``interval`` steps, the total energy per atom and the shortest interatomic
distance. It fails when

- any pair of atoms comes closer than ``min_distance`` Å (the run stops there), or
- the energy drift, the slope of a least-squares line through the total energy per atom
  against time, exceeds ``max_drift`` in eV/atom/ps (in magnitude).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from pfd_atomate.validation.eos import as_atoms
from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

#: default share of the sum of covalent radii below which a pair counts as collapsed
COVALENT_FRACTION = 0.6
#: default largest acceptable |energy drift|, eV/atom/ps
DEFAULT_MAX_DRIFT = 0.005


class MDStabilityResult(BaseModel):
    """Outcome of :func:`md_stability`.

    Attributes
    ----------
    stable: no collapsed pair and ``|energy_drift| <= max_drift``.
    reason: why the run is unstable ("" when stable).
    n_atoms: atoms simulated.
    n_steps_requested, n_steps_run: MD steps asked for and done (fewer after a collapse).
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


def md_stability(
    structure,
    calculator: Calculator,
    n_steps: int = 1000,
    time_step: float = 1.0,
    temperature: float = 300.0,
    min_distance: float | None = None,
    max_drift: float = DEFAULT_MAX_DRIFT,
    interval: int = 5,
    seed: int = 0,
) -> MDStabilityResult:
    """Run NVE molecular dynamics and check pair distances and energy conservation.

    Parameters
    ----------
    structure: starting structure (``Atoms``, ``Structure`` or Frame).
    calculator: ASE calculator (the model under test).
    n_steps: velocity-Verlet steps (>= 2 * interval).
    time_step: fs.
    temperature: initial Maxwell-Boltzmann temperature, K (centre-of-mass motion removed);
        the kinetic temperature settles near half of it as energy flows into potential energy.
    min_distance: collapse threshold, Å; default :func:`default_min_distance`.
    max_drift: largest acceptable |energy drift|, eV/atom/ps.
    interval: steps between samples.
    seed: seed of the initial velocities.

    Returns
    -------
    MDStabilityResult (drift in eV/atom/ps, distances in Å, sampled time series).

    Raises
    ------
    ValueError: non-positive ``time_step``/``max_drift``/``min_distance``, negative
        temperature, ``interval < 1`` or ``n_steps < 2 * interval``, or a starting
        structure that already has a pair closer than ``min_distance``.
    """
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    if not time_step > 0:
        raise ValueError(f"time_step must be > 0 fs, got {time_step}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature}")
    if not max_drift > 0:
        raise ValueError(f"max_drift must be > 0 eV/atom/ps, got {max_drift}")
    if interval < 1 or n_steps < 2 * interval:
        raise ValueError(f"need interval >= 1 and n_steps >= 2 * interval, got n_steps={n_steps}, interval={interval}")
    atoms = as_atoms(structure)
    threshold = default_min_distance(atoms.get_chemical_symbols()) if min_distance is None else float(min_distance)
    if not threshold > 0:
        raise ValueError(f"min_distance must be > 0 Å, got {min_distance}")
    start_distance = min_pair_distance(atoms, threshold)
    if start_distance < threshold:
        raise ValueError(f"the starting structure already has atoms {start_distance:.3f} Å apart (< {threshold} Å)")

    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=time_step * units.fs)
    n_atoms = len(atoms)
    # distances only matter below the threshold; look a little further to report the minimum
    search = max(2.0 * threshold, 3.0)

    times, energies, temps, dists = [], [], [], []

    def sample() -> float:
        d = min_pair_distance(atoms, search)
        times.append(dyn.nsteps * time_step / 1000.0)
        energies.append(atoms.get_total_energy() / n_atoms)
        temps.append(atoms.get_temperature())
        dists.append(d)
        return d

    sample()
    collapsed = False
    while dyn.nsteps < n_steps:
        dyn.run(min(interval, n_steps - dyn.nsteps))
        if sample() < threshold or not np.isfinite(energies[-1]):
            collapsed = True
            break

    t, e = np.asarray(times), np.asarray(energies)
    finite = np.isfinite(e)
    drift = float(np.polyfit(t[finite], e[finite], 1)[0]) if finite.sum() >= 2 else float("inf")
    deviation = float(np.max(np.abs(e[finite] - e[0]))) if finite.any() else float("inf")
    reasons = []
    if collapsed:
        reasons.append(f"atoms {min(dists):.3f} Å apart (< {threshold:.3f} Å) after {dyn.nsteps} steps")
    if not abs(drift) <= max_drift:
        reasons.append(f"energy drift {drift:.3g} eV/atom/ps exceeds {max_drift:g}")
    return MDStabilityResult(
        stable=not reasons,
        reason="; ".join(reasons),
        n_atoms=n_atoms,
        n_steps_requested=n_steps,
        n_steps_run=int(dyn.nsteps),
        time_step=float(time_step),
        temperature=float(temperature),
        min_distance=threshold,
        max_drift=float(max_drift),
        energy_drift=drift,
        max_energy_deviation=deviation,
        min_pair_distance=float(min(dists)),
        times=t.tolist(),
        total_energy=e.tolist(),
        temperatures=[float(x) for x in temps],
        pair_distance=[float(x) for x in dists],
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
