"""k-point convergence of CP2K labels for one phase's strained frames: which mesh makes labels of a metal usable.

``kpoint_pinning.py`` found that on its own 4x4x4 mesh (40 k-points/Å⁻³) the k-point error of β-Sn Si8
frames (metallic) swings by 40 meV/atom between frames 3 % apart in strain, against 2 meV/atom for diamond
on 3x3x3. Here the same perturbed frames of one phase (``--phase``, default β-Sn; ``--frames``: indices among
that phase's 6) are labelled on a series of meshes (``--meshes``, n x n x n) with the labeller's settings;
for each mesh it reports, against the densest, the spread across frames of the energy error (std and
max - min, meV/atom: what a model would fit as noise) and the force RMSE (eV/Å), plus CP2K's time per label.
With ``--smearing`` the Fermi-Dirac temperature (K) is changed too.

Usage: ``.venv/bin/python benchmarks/kpoint_convergence.py [--phase beta-Sn] [--meshes 4 6 8 10]``
(one CP2K process, one thread; a rerun on the same workdir reuses finished labels).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import environment, save, si_phase
from kpoint_pinning import PHASES, label

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="beta-Sn", choices=PHASES)
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 4, 5])
    parser.add_argument("--meshes", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--smearing", type=float, default=300.0, help="Fermi-Dirac temperature, K")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "pfd_atomate" / "kpoint-pinning")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.data import Dataset
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.perturb.core import perturb_structures

    structures = [AseAtomsAdaptor.get_structure(si_phase(p)) for p in PHASES]
    frames = perturb_structures(structures, n_frames=6, cell_pert_fraction=0.03, atom_pert_distance=0.1, seed=0)
    of_phase = [f for f in frames if f.source.startswith(f"perturb:{PHASES.index(args.phase)}")]
    subset = Dataset(frames=[of_phase[i] for i in args.frames], name=f"kpoint-convergence-{args.phase}")
    labelled, seconds = {}, {}
    for n in args.meshes:
        t0 = time.perf_counter()
        labelled[n] = label(subset, cp2k_static_maker(kpoints=(n, n, n), smearing_temperature=args.smearing), None,
                            args.workdir)
        seconds[n] = (time.perf_counter() - t0) / len(subset)
        print(f"{n}x{n}x{n}: {seconds[n]:.0f} s per label", flush=True)
    dense = labelled[max(args.meshes)]
    n_atoms = subset[0].n_atoms
    rows = {}
    for n in args.meshes:
        errors = np.array([1e3 * (a.energy - b.energy) / n_atoms for a, b in zip(labelled[n], dense, strict=True)])
        forces = np.concatenate([np.asarray(a.forces) - np.asarray(b.forces) for a, b in zip(labelled[n], dense,
                                                                                              strict=True)])
        rows[f"{n}x{n}x{n}"] = {"energy_error_mev_per_atom": errors.tolist(), "std_mev_per_atom": float(errors.std()),
                                "spread_mev_per_atom": float(errors.max() - errors.min()),
                                "force_rmse_ev_per_a": float(np.sqrt(np.mean(forces ** 2))),
                                "seconds_per_label": seconds[n]}
        print(n, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[f"{n}x{n}x{n}"].items()
                  if k != "energy_error_mev_per_atom"})
    tag = f"{args.phase}" + ("" if args.smearing == 300.0 else f"_T{args.smearing:g}")
    save(f"kpoint_convergence_{tag}", {
        "benchmark": "kpoint_convergence", "environment": environment(1), "device": "cpu, 1 thread",
        "system": f"Si {args.phase} 8-atom cell, kpoint_pinning.py's perturbed frames {args.frames} (cell 0.03, "
                  "atoms 0.1 Å, seed 0)", "smearing_K": args.smearing, "reference": f"{max(args.meshes)}^3",
        "labeller": "cp2k_static_maker (PBE, DZVP-MOLOPT-SR-GTH, 300 Ry)", "meshes": rows}, RESULTS)


if __name__ == "__main__":
    main()
