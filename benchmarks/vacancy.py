"""Vacancy formation energy of diamond Si: a PFD run's models against CP2K.

E_vac = E(N-1 atoms, one atom removed) - (N-1)/N * E(N atoms, perfect), with the perfect crystal as
the Si chemical potential (PFD supplementary methods: "The energy of diamond Si is used as a
reference"), in the 32-atom cell the paper uses for diamond: the conventional cell doubled along a
and b, at the CP2K lattice constant (``cp2k_reference.py``).

- Unrelaxed: the vacancy cell with every other atom in place.
- Relaxed: positions relaxed at fixed cell (ASE BFGS, fmax 0.01 eV/Å) with each model.
  A CP2K relaxation of 31 atoms is hours here. CP2K instead labels the PF-relaxed cell once.
  That energy is an upper bound of the CP2K relaxed energy, and close to it when PF's geometry
  is good.

CP2K: the labels' settings (``cp2k_static_maker``) with a 2x2x4 k-mesh. That is the k-point
sampling of 4x4x4 on the 8-atom cell. Energies are cached in
``benchmarks/data/si_vacancy_cp2k_k224.json.gz``, keyed by frame fingerprint, so no frame is labelled
twice.

Usage: ``.venv/bin/python benchmarks/vacancy.py --run benchmarks/runs/demo-full [--tag demo]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from _common import environment, save
from cp2k_reference import load_reference

DATA = Path(__file__).resolve().parent / "data"
CACHE = DATA / "si_vacancy_cp2k_k224.json.gz"
RESULTS = Path(__file__).resolve().parent / "results"
KPOINTS = (2, 2, 4)
SUPERCELL = (2, 2, 1)
FMAX = 0.01  # eV/Å


def cells(a0: float):
    """(perfect 32-atom diamond Si, the same with atom 0 removed) as ASE ``Atoms``, Å."""
    from ase.build import bulk

    perfect = bulk("Si", "diamond", a=a0, cubic=True) * SUPERCELL
    vacancy = perfect.copy()
    del vacancy[0]
    return perfect, vacancy


def formation_energy(e_vacancy: float, e_perfect: float, n_perfect: int) -> float:
    """E_vac = E(N-1) - (N-1)/N E(N), eV."""
    return float(e_vacancy - (n_perfect - 1) / n_perfect * e_perfect)


def relaxed(atoms, calculator):
    """A copy of ``atoms`` with positions relaxed at fixed cell (BFGS to ``FMAX``) and its energy (eV)."""
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = calculator
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=FMAX, steps=500)
    return atoms, float(atoms.get_potential_energy()), int(opt.nsteps)


def cp2k_energies(frames: dict) -> dict:
    """CP2K energy (eV) of each ``{name: Atoms}``, from the cache or labelled now (2 processes)."""
    from _dft_labels import label_with_cp2k

    from pfd_atomate.data import Dataset, Frame

    cache = json.loads(gzip.decompress(CACHE.read_bytes())) if CACHE.exists() else {"kpoints": list(KPOINTS),
                                                                                      "frames": {}}
    wanted = {name: Frame.from_atoms(atoms, source=f"vacancy:{name}", with_labels=False)
              for name, atoms in frames.items()}
    todo = {name: f for name, f in wanted.items() if f.fingerprint() not in cache["frames"]}
    if todo:
        start = time.perf_counter()
        labelled, order = label_with_cp2k(Dataset(frames=list(todo.values()), name="si-vacancy"), KPOINTS,
                                          n_procs=min(2, len(todo)))
        wall = time.perf_counter() - start
        names = list(todo)
        for frame, i in zip(labelled, order, strict=True):
            cache["frames"][todo[names[i]].fingerprint()] = {"name": names[i], "energy": frame.energy,
                                                            "n_atoms": frame.n_atoms, "wall_s": wall,
                                                            "max_force": float(np.abs(frame.forces).max())}
        CACHE.write_bytes(gzip.compress(json.dumps(cache).encode()))
        print(f"CP2K labelled {len(todo)} cells in {wall:.0f} s; cached in {CACHE.name}", flush=True)
    return {name: cache["frames"][f.fingerprint()] for name, f in wanted.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished PFD run folder (local engine)")
    parser.add_argument("--tag", default="", help="suffix of the result file (e.g. the run's name)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another deepmd-kit model to compare (repeatable)")
    args = parser.parse_args()
    from _common import run_models

    from pfd_atomate.validation.jobs import CalculatorSpec

    a0 = load_reference()["eos"]["a0"]
    perfect, vacancy = cells(a0)
    backend, models = run_models(args.run.resolve(), args.model)
    n = len(perfect)
    result = {"benchmark": "vacancy", "environment": environment(1), "run": str(args.run),
              "system": f"diamond Si, {n}-atom cell ({SUPERCELL} conventional) at the CP2K a0 {a0:.4f} Å, one vacancy",
              "relaxation": f"positions at fixed cell, ASE BFGS to fmax {FMAX} eV/Å", "models": {}}
    pf_relaxed = None
    for name, model in models.items():
        calc = CalculatorSpec.from_model(model, backend, name=name).build()
        start = time.perf_counter()
        e_perfect = _energy(perfect, calc)
        e_unrelaxed = _energy(vacancy, calc)
        atoms, e_relaxed, steps = relaxed(vacancy, calc)
        if name.startswith("PF "):
            pf_relaxed = atoms
        row = {"unrelaxed_ev": formation_energy(e_unrelaxed, e_perfect, n),
               "relaxed_ev": formation_energy(e_relaxed, e_perfect, n), "bfgs_steps": steps,
               "wall_s": time.perf_counter() - start}
        result["models"][name] = row
        print(f"{name}: E_vac unrelaxed {row['unrelaxed_ev']:.3f} eV, relaxed {row['relaxed_ev']:.3f} eV "
              f"({steps} BFGS steps, {row['wall_s']:.0f} s)", flush=True)
    dft = cp2k_energies({"perfect": perfect, "vacancy unrelaxed": vacancy, "vacancy PF-relaxed": pf_relaxed})
    e_perfect = dft["perfect"]["energy"]
    result["cp2k"] = {
        "kpoints": list(KPOINTS),
        "unrelaxed_ev": formation_energy(dft["vacancy unrelaxed"]["energy"], e_perfect, n),
        "at_pf_relaxed_geometry_ev": formation_energy(dft["vacancy PF-relaxed"]["energy"], e_perfect, n),
        "max_force_at_pf_relaxed_geometry_ev_per_a": dft["vacancy PF-relaxed"]["max_force"],
        "label_wall_s": {k: v["wall_s"] for k, v in dft.items()},
    }
    c = result["cp2k"]
    print(f"CP2K: E_vac unrelaxed {c['unrelaxed_ev']:.3f} eV, at the PF-relaxed geometry "
          f"{c['at_pf_relaxed_geometry_ev']:.3f} eV (largest CP2K force there {c['max_force_at_pf_relaxed_geometry_ev_per_a']:.3f} eV/Å)",
          flush=True)
    save(f"vacancy_{args.tag}" if args.tag else "vacancy", result, RESULTS)


def _energy(atoms, calc) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


if __name__ == "__main__":
    main()
