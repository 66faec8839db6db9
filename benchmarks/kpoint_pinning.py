"""How much label noise a density-based k-mesh puts into one structure's frames, and what pinning removes.

The multi-phase run's perturbed frames (the demo's ``PerturbMaker``: 6 per structure, 3 % strain, 0.1 Å
displacements, seed 0) of diamond, β-Sn and BC8 Si8 are labelled by real CP2K through ``LabelMaker`` three
ways: with ``cp2k_static_maker(kpoint_density=40)`` and the input structures as ``kpoint_references``
(each frame on its structure's mesh: what ``PFDMaker`` now does), with the same labeller and no references
(each frame on the mesh of its own strained cell: what the multi-phase run did; only the frames whose mesh
differs are labelled again) and on a dense 6x6x6 mesh (the reference). Per structure it reports the k-mesh
error of each frame, ``E(mesh) - E(6x6x6)`` in meV/atom: its spread across frames (std, max - min) is the
noise a model fits, while a constant offset only shifts the phase's energy; and the force RMSE against
6x6x6 (eV/Å).

Usage: ``.venv/bin/python benchmarks/kpoint_pinning.py [--workdir DIR]`` (one CP2K process, one thread;
a rerun on the same workdir reuses every finished label).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import environment, pyplot, save, save_figure, si_phase

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("diamond", "beta-Sn", "bc8")
DENSE = (6, 6, 6)


def label(frames, static_maker, references, workdir: Path):
    """Label ``frames`` with real CP2K through ``LabelMaker`` (run_locally, embedded store in ``workdir``)."""
    from jobflow import run_locally

    from pfd_atomate.label.flows import LabelMaker
    from pfd_atomate.store import embedded_store, fetch_dataset

    store = embedded_store(workdir)
    flow = LabelMaker(static_maker=static_maker, kpoint_references=references).make(frames)
    run_locally(flow, store=store, root_dir=workdir / "jobs", create_folders=True, ensure_success=True, log=False)
    store.connect()
    return fetch_dataset(store, flow.output.uuid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "pfd_atomate" / "kpoint-pinning")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.data import Dataset
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.label.kpoints import frame_kpoints, mesh_references
    from pfd_atomate.perturb.core import perturb_structures

    start = time.perf_counter()
    structures = [AseAtomsAdaptor.get_structure(si_phase(p)) for p in PHASES]
    frames = perturb_structures(structures, n_frames=6, cell_pert_fraction=0.03, atom_pert_distance=0.1, seed=0)
    frames = Dataset(frames=frames.frames, name="kpoint-pinning")
    density = cp2k_static_maker(kpoint_density=40)
    references = mesh_references(density, structures)
    pinned_mesh = [tuple(frame_kpoints(f, references).kpts[0]) for f in frames]
    own_mesh = [tuple(density.input_set_generator._get_kpoints(f.to_structure(), None).kpts[0])  # noqa: SLF001
                for f in frames]
    differ = [i for i, (p, o) in enumerate(zip(pinned_mesh, own_mesh, strict=True)) if p != o]
    print(f"{len(differ)} of {len(frames)} frames get another mesh than their structure's")

    timings = {}
    t0 = time.perf_counter()
    pinned = label(frames, density, structures, args.workdir)
    timings["pinned_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    own = label(frames.subset(differ, name="own-mesh"), density, [], args.workdir) if differ else Dataset(frames=[])
    timings["own_mesh_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dense = label(frames, cp2k_static_maker(kpoints=DENSE), None, args.workdir)
    timings["dense_s"] = time.perf_counter() - t0
    own_by_index = dict(zip(differ, own, strict=True))

    per_frame, summary = [], {}
    for j, phase in enumerate(PHASES):
        rows = []
        for i in range(len(frames)):
            if not frames[i].source.startswith(f"perturb:{j}"):
                continue
            n = frames[i].n_atoms
            own_frame = own_by_index.get(i, pinned[i])  # same mesh: the same label
            row = {"phase": phase, "index": i, "pinned_mesh": pinned_mesh[i], "own_mesh": own_mesh[i],
                   "pinned_error_mev_per_atom": 1e3 * (pinned[i].energy - dense[i].energy) / n,
                   "own_error_mev_per_atom": 1e3 * (own_frame.energy - dense[i].energy) / n,
                   "pinned_force_rmse": float(np.sqrt(np.mean((np.asarray(pinned[i].forces)
                                                               - np.asarray(dense[i].forces)) ** 2))),
                   "own_force_rmse": float(np.sqrt(np.mean((np.asarray(own_frame.forces)
                                                            - np.asarray(dense[i].forces)) ** 2)))}
            rows.append(row)
        per_frame += rows
        stats = {}
        for kind in ("pinned", "own"):
            errors = np.array([r[f"{kind}_error_mev_per_atom"] for r in rows])
            stats[kind] = {"meshes": sorted({"x".join(map(str, r[f"{kind}_mesh"])) for r in rows}),
                           "mean_error_mev_per_atom": float(errors.mean()),
                           "std_error_mev_per_atom": float(errors.std()),
                           "spread_mev_per_atom": float(errors.max() - errors.min()),
                           "force_rmse_ev_per_a": float(np.sqrt(np.mean([r[f"{kind}_force_rmse"] ** 2
                                                                         for r in rows])))}
        summary[phase] = {"frames": len(rows), **stats}
        print(phase, {k: (v["meshes"], round(v["std_error_mev_per_atom"], 2), round(v["spread_mev_per_atom"], 2),
                          round(v["force_rmse_ev_per_a"], 4)) for k, v in stats.items()})

    payload = {"benchmark": "kpoint_pinning", "environment": environment(1), "system": "Si8 diamond, β-Sn, BC8",
               "frames": {"per_structure": 6, "perturb": "cell 0.03, atoms 0.1 Å (normal), seed 0"},
               "labeller": "cp2k_static_maker(kpoint_density=40); reference: kpoints 6x6x6", "device": "cpu, 1 thread",
               "frames_on_another_mesh": len(differ), "n_frames": len(frames), "per_phase": summary,
               "per_frame": per_frame, "timings_s": timings, "wall_time_s": time.perf_counter() - start}
    save("kpoint_pinning", payload, RESULTS)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PHASES), figsize=(4 * len(PHASES), 3.4), sharey=False)
    for ax, phase in zip(axes, PHASES):
        rows = [r for r in per_frame if r["phase"] == phase]
        x = np.arange(len(rows))
        ax.plot(x, [r["own_error_mev_per_atom"] for r in rows], "o", label="own cell's mesh (before)")
        ax.plot(x, [r["pinned_error_mev_per_atom"] for r in rows], "s", mfc="none", label="structure's mesh (now)")
        for k, r in enumerate(rows):
            ax.annotate("x".join(map(str, r["own_mesh"])), (k, r["own_error_mev_per_atom"]), fontsize=7)
        ax.set(title=f"{phase} Si8", xlabel="perturbed frame", ylabel="E(mesh) - E(6x6x6), meV/atom")
    axes[0].legend(fontsize=8)
    save_figure(fig, RESULTS / "kpoint_pinning.png")


if __name__ == "__main__":
    main()
