"""Independent held-out CP2K frames of three Si phases, and a PFD run's models on them, per phase.

Made apart from any PFD run (own seeds, own generator), labelled by the PFD labeller's settings
(``cp2k_static_maker``, PBE, DZVP-MOLOPT-SR-GTH), cached in ``benchmarks/data/`` with those settings:

- **diamond**: the demo's 39 held-out strained + rattled Si8 cells (``cli.demo.held_out_dft_frames``) and 30
  MD frames at 300/900/1500 K (``held_out_md.py``), k-mesh 3x3x3 (with ``--kpoint-density`` the same frames
  labelled again on the density's mesh, 7x7x7 at 300);
- **beta-Sn** and **bc8** (8-atom cells, ``_common.si_phase``): ``--rattled`` strained (±4 %) + rattled
  (σ 0.05-0.2 Å) cells and ``--per-temperature`` frames of Langevin MD with the zero-shot DPA-4 at each
  of ``--temperatures``, k-mesh 4x4x4 (pymatgen's 40 k-points/Å⁻³ for these cells; 3x3x3 for Si8
  diamond).

With ``--run`` the zero-shot DPA-4, PF (teacher) and PFD (student) of a finished run are tested on every
set: energy RMSE (eV/atom, raw and with each model's mean offset removed per phase), force RMSE (eV/Å) and
the phase energy error (the model's mean energy offset on a phase minus its offset on diamond, eV/atom: how
far off the energy of each phase relative to diamond is). Rattled frames pass the PFD loop's pre-label
filter (``FrameFilter()``) first, as the demo's held-out set does.

``--kpoint-density 300`` labels the same β-Sn / BC8 frames again on the meshes that ``multi_phase.py``'s
labeller gives their cells (8x8x7 / 7x7x7), into new cache files: 4x4x4 is far too coarse for metallic β-Sn
(``kpoint_convergence.py``).

Usage: ``.venv/bin/python benchmarks/held_out_phases.py [--run RUN_DIR] [--kpoint-density D] [--procs N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import density_kpoints, environment, save, si_frames
from _dft_labels import DATA, cached_dataset, kept_frames, label_and_cache, read_cached_dataset
from held_out_md import md_held_out, rmse_row, run_md

RESULTS = Path(__file__).resolve().parent / "results"
KPOINTS = {"diamond": (3, 3, 3), "beta-Sn": (4, 4, 4), "bc8": (4, 4, 4)}


def phase_held_out(phase: str, rattled: int, temperatures, per_temperature: int, seed: int, relabel: bool = False,
                   kpoints: tuple[int, int, int] | None = None, n_procs: int = 2):
    """CP2K-labelled strained/rattled and MD frames of ``phase`` (not diamond), cached; (Dataset, meta).

    ``kpoints``: the k-mesh (default :data:`KPOINTS`); ``n_procs``: single-threaded CP2K processes at once.
    """
    from pfd_atomate.data import Dataset

    kpoints = tuple(kpoints or KPOINTS[phase])
    settings = {"system": f"Si {phase}, 8-atom cell (benchmarks/_common.si_phase)", "rattled": rattled,
                "rattle": "si_frames(strain 0.04, displacements 0.05-0.2 Å)", "temperatures_K": list(temperatures),
                "per_temperature": per_temperature, "seed": seed,
                "md": "ASE Langevin, 2 fs, friction 0.01, pretrained DPA-4 (dpa4-neo), 200 steps to equilibrate, "
                      "a frame every 40 steps", "kpoints": list(kpoints),
                "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker"}
    def file_name(mesh) -> str:
        return f"si_{phase}_cp2k_k{''.join(map(str, mesh))}_r{rattled}_md{'-'.join(f'{t:g}' for t in temperatures)}K" \
               f"_n{per_temperature}_s{seed}"

    name = file_name(kpoints)
    path = DATA / f"{name}.json.gz"
    if (cached := cached_dataset(path, settings, relabel)) is not None:
        return cached
    first = DATA / f"{file_name(KPOINTS[phase])}.json.gz"

    def make():
        if kpoints != KPOINTS[phase] and first.exists():  # another mesh: the very frames of the first set
            frames = read_cached_dataset(first)[1]
            return Dataset(frames=[f.without_labels() for f in frames.frames], name=f"si-{phase}-held-out"), 0.0
        md, md_wall = run_md(temperatures, per_temperature, seed + 100, phase=phase)
        return Dataset.concat([si_frames(rattled, seed, phase=phase), md], name=f"si-{phase}-held-out"), md_wall

    frames, md_wall = kept_frames(name, make, relabel)
    return label_and_cache(frames, path, settings, kpoints, n_procs=n_procs, md_wall_s=md_wall)


def relabelled(data, name: str, origin: str, kpoints: tuple[int, int, int], n_procs: int = 2):
    """The frames of ``data`` labelled again by CP2K on another k-mesh, cached as ``data/{name}.json.gz``;
    (Dataset in input order, meta). ``origin`` names where the frames come from (part of the cache's settings)."""
    from pfd_atomate.data import Dataset

    settings = {"frames": origin, "n_frames": len(data), "kpoints": list(kpoints),
                "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker"}
    path = DATA / f"{name}.json.gz"
    if (cached := cached_dataset(path, settings)) is not None:
        return cached
    frames = Dataset(frames=[f.without_labels() for f in data.frames], name=name)
    return label_and_cache(frames, path, settings, kpoints, n_procs=n_procs)


def held_out_sets(args) -> dict:
    """Phase name → (kind → labelled Dataset), diamond from the existing caches (relabelled on the density's
    mesh with ``args.kpoint_density``)."""
    from pfd_atomate.cli.demo import held_out_dft_frames
    from pfd_atomate.select.filters import FrameFilter

    md, _ = md_held_out([300.0, 900.0, 1500.0], 10, 2026)
    sets = {"diamond": {"rattled": held_out_dft_frames(), "md": md}}
    if args.kpoint_density:  # the same diamond frames on the mesh the run's labeller gives diamond
        mesh = density_kpoints("diamond", args.kpoint_density)
        k = "".join(map(str, mesh))
        origins = {"rattled": ("si8_cp2k_k333_n200_s11.json.gz, its 39 held-out frames (cli.demo.held_out_dft_frames)",
                               f"si8_cp2k_k{k}_held_out39_from_k333_n200_s11"),
                   "md": ("si8_md_cp2k_k333_300-900-1500K_n10_s2026.json.gz",
                          f"si8_md_cp2k_k{k}_300-900-1500K_n10_s2026")}
        for kind, (origin, name) in origins.items():
            data, meta = relabelled(sets["diamond"][kind], name, origin, mesh, n_procs=args.procs)
            if len(data) != len(sets["diamond"][kind]):
                raise RuntimeError(f"diamond {kind}: {meta['n_labelled']} of {meta['n_frames']} frames labelled")
            sets["diamond"][kind] = data
            print(f"diamond {kind} on {'x'.join(map(str, mesh))}: {len(data)} CP2K frames "
                  f"(CP2K {meta['cp2k_wall_s']:.0f} s)", flush=True)
    for phase in ("beta-Sn", "bc8"):
        kpoints = density_kpoints(phase, args.kpoint_density) if args.kpoint_density else None
        data, meta = phase_held_out(phase, args.rattled, args.temperatures, args.per_temperature, args.seed,
                                    kpoints=kpoints, n_procs=args.procs)
        print(f"{phase}: {len(data)} CP2K frames (MD {meta['md_wall_s']:.0f} s, CP2K {meta['cp2k_wall_s']:.0f} s)",
              flush=True)
        kinds = ["md" if ":md:" in f.source or f.source.startswith(f"{phase}:md") else "rattled" for f in data.frames]
        sets[phase] = {k: data.subset([i for i, kk in enumerate(kinds) if kk == k]) for k in ("rattled", "md")}
        sets[phase]["rattled"], rejected = FrameFilter().apply(sets[phase]["rattled"])
        if sum(rejected.values()):
            print(f"{phase}: the pre-label filter drops {rejected} rattled frames", flush=True)
    return sets


def evaluate(run_dir: Path, sets: dict, extra=()) -> dict:
    """RMSEs of the zero-shot DPA-4, PF, PFD and the ``extra`` models ("NAME=PATH") per phase and kind of frame."""
    from _common import run_models

    from pfd_atomate.data import Dataset

    backend, models = run_models(run_dir, extra)
    table: dict = {}
    offsets: dict = {}
    for phase, kinds in sets.items():
        groups = {**kinds, "all": Dataset.concat(list(kinds.values()), name=phase)}
        table[phase] = {}
        for g, data in groups.items():
            row = {}
            for name, model in models.items():
                pred = backend.predict(model, data)
                row[name] = rmse_row(data, pred)
                if g == "all":
                    offsets.setdefault(name, {})[phase] = float(np.mean(pred.energies_per_atom() - data.energies_per_atom()))
            table[phase][g] = row
    for phase in sets:
        for name in models:
            table[phase]["all"][name]["phase_energy_error_ev_per_atom"] = offsets[name][phase] - offsets[name]["diamond"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rattled", type=int, default=8)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 900.0])
    parser.add_argument("--per-temperature", type=int, default=4)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--run", type=Path, default=None, help="a finished PFD run folder to test")
    parser.add_argument("--tag", default="", help="suffix of the result file (e.g. the run's name)")
    parser.add_argument("--kpoint-density", type=float, default=None,
                        help="β-Sn / BC8 on the mesh of this CP2K k-point density (multi_phase.py's; default: "
                             "KPOINTS, 4x4x4); the frames are the same, their labels and cache file new")
    parser.add_argument("--procs", type=int, default=2, help="single-threaded CP2K processes at once")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another deepmd-kit model to test (repeatable; without --run: the zero-shot DPA-4 beside it)")
    parser.add_argument("--extra-set", action="append", default=[], metavar="NAME=FILE",
                        help="a cached-label file (relative to benchmarks/data/) tested as one more group of frames, "
                             "e.g. diamond-64=si64_md_cp2k_k222_300-900K_n2_s2027.json.gz (held_out_md.py --supercell)")
    args = parser.parse_args()
    sets = held_out_sets(args)
    for item in args.extra_set:
        name, _, file = item.partition("=")
        sets[name] = {"md": read_cached_dataset(DATA / file)[1]}
    result = {"benchmark": "held_out_phases", "environment": environment(1),
              "sets": {p: {k: len(d) for k, d in kinds.items()} for p, kinds in sets.items()}}
    if args.run is not None or args.model:
        result["run"] = None if args.run is None else str(args.run)
        result["rmse"] = evaluate(None if args.run is None else args.run.resolve(), sets, args.model)
        for phase, groups in result["rmse"].items():
            for g, row in groups.items():
                print(phase, g, len(sets[phase][g]) if g != "all" else "", {
                    n: (round(1000 * v["energy_rmse_offset_removed_ev_per_atom"], 1), round(v["force_rmse_ev_per_a"], 3),
                        round(1000 * v.get("phase_energy_error_ev_per_atom", float("nan")), 1)) for n, v in row.items()})
    save(f"held_out_phases_{args.tag}" if args.tag else "held_out_phases", result, RESULTS)


if __name__ == "__main__":
    main()
