"""An independent held-out set of MD frames for diamond Si8, labelled by CP2K, and a demo run's models on it.

The demo's other held-out set (39 strained/rattled frames, ``data/si8_cp2k_k333_n200_s11``) is harsher
than anything MD at the explored temperatures visits. These frames come from short NVT MD of the
8-atom cubic cell driven by the **pretrained** DPA-4 checkpoint (ASE Langevin, its own seeds, not a
PFD run), at several temperatures, labelled with the same CP2K settings (PBE, 3x3x3 k-points,
``cp2k_static_maker``) and cached in ``data/`` with the settings that made them.

Usage: ``python benchmarks/held_out_md.py [--temperatures 300 900 1500] [--per-temperature 10]
[--run runs/demo-si] [--model NAME=FILE ...]``; the zero-shot foundation model, with ``--run`` the run's
teacher (PF) and student (PFD), and any deepmd model file given by ``--model`` (e.g. a teacher rebuilt by
``teacher_from_labels.py``) are tested on the frames, per temperature.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import time
from pathlib import Path

import numpy as np
from _common import environment, save, si_phase
from _dft_labels import DATA, cached_dataset, kept_frames, label_and_cache

RESULTS = Path(__file__).resolve().parent / "results"


def _md_frames(temperature: float, n_frames: int, seed: int, equilibrate: int, interval: int, queue,
               phase: str = "diamond", atoms=None) -> None:
    """Child process (one thread): Langevin MD of an 8-atom Si cell (or of ``atoms``, named ``phase``) with
    pretrained DPA-4; frames to ``queue``."""
    from _dft_labels import die_with_parent_group

    die_with_parent_group()
    os.environ["OMP_NUM_THREADS"] = "1"
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from pfd_atomate.data import Dataset, Frame, ModelFile
    from pfd_atomate.train.deepmd import DeepMDBackend

    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    atoms = si_phase(phase) if atoms is None else atoms.copy()
    atoms.calc = backend.calculator(ModelFile.from_path(backend.base_model_path(), backend="deepmd"))
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    md = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.01, rng=rng)
    md.run(equilibrate)
    frames = []
    for _ in range(n_frames):
        md.run(interval)
        tag = f"md:nvt:T{temperature:g}:dpa4-zero-shot"
        frames.append(Frame.from_atoms(atoms, with_labels=False, source=tag if phase == "diamond" else f"{phase}:{tag}"))
    queue.put((temperature, Dataset(frames=frames).model_dump_json()))


def md_held_out(temperatures, per_temperature: int, seed: int, relabel: bool = False,
                supercell: tuple[int, int, int] = (1, 1, 1), kpoints: tuple[int, int, int] = (3, 3, 3),
                n_procs: int = 2, phase: str = "diamond"):
    """CP2K-labelled MD frames per temperature, from the cache when made with the same settings.

    ``supercell``: MD in this replica of the 8-atom cell (e.g. (2, 2, 2): 64 atoms, whose periodic images lie
    outside a 6 Å cutoff, unlike the 8-atom cell's), labelled on ``kpoints``; ``phase``: the 8-atom cell of
    ``_common.si_phase`` (the diamond set's settings and file names are those of before the option)."""
    big = tuple(supercell) != (1, 1, 1)
    n_atoms = 8 * int(np.prod(supercell))
    system = ("diamond Si, {n}-atom cubic cell (a = 5.43 Å" if phase == "diamond" else f"{phase} Si, {{n}}-atom cell (_common.si_phase")
    settings = {"system": system.format(n=n_atoms) + (f", {supercell} supercell)" if big else ")"),
                "temperatures_K": list(temperatures), "per_temperature": per_temperature, "seed": seed,
                "md": "ASE Langevin, 2 fs, friction 0.01, pretrained DPA-4 (dpa4-neo), 200 steps to equilibrate, "
                      "a frame every 40 steps", "kpoints": list(kpoints),
                "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker"}
    path = DATA / (f"si{n_atoms}{'' if phase == 'diamond' else '_' + phase}_md_cp2k_k{''.join(map(str, kpoints))}_{'-'.join(f'{t:g}' for t in temperatures)}K"
                   f"_n{per_temperature}_s{seed}.json.gz")
    if (cached := cached_dataset(path, settings, relabel)) is not None:
        return cached
    atoms = si_phase(phase).repeat(supercell) if big else None
    frames, md_wall = kept_frames(path.name.removesuffix(".json.gz"), lambda: run_md(
        temperatures, per_temperature, seed, phase=phase, atoms=atoms, n_procs=n_procs), relabel)
    if big or phase != "diamond":  # the name picks the kept labelling folder: one per set (two sets once shared one)
        frames = frames.model_copy(update={"name": path.name.removesuffix(".json.gz")})
    return label_and_cache(frames, path, settings, tuple(kpoints), n_procs=n_procs, md_wall_s=md_wall)


def run_md(temperatures, per_temperature: int, seed: int, phase: str = "diamond", atoms=None, n_procs: int = 2):
    """MD frames at each temperature, ``n_procs`` single-threaded processes at a time; (Dataset, wall time s).
    ``atoms``: the cell to run instead of ``si_phase(phase)`` (``phase`` then names the frames)."""
    from pfd_atomate.data import Dataset

    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_md_frames, args=(t, per_temperature, seed + i, 200, 40, queue, phase, atoms))
             for i, t in enumerate(temperatures)]
    for p in procs[:n_procs]:
        p.start()
    pending, results = procs[n_procs:], {}
    while len(results) < len(procs):
        try:
            t, payload = queue.get(timeout=10)
        except queue_module.Empty:  # nothing yet: a child that died without a word is an error
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"an MD process failed (exit codes {dead}); see its traceback above") from None
            continue
        results[t] = Dataset.model_validate_json(payload)
        if pending:
            pending.pop(0).start()
    for p in procs:
        p.join()
    return Dataset.concat([results[t] for t in temperatures], name="si8-md"), time.perf_counter() - start


def rmse_row(reference, predicted) -> dict:
    """Energy RMSE per atom (eV/atom; absolute and with the mean offset removed) and force RMSE (eV/Å) of
    ``predicted`` against ``reference`` (Datasets of the same frames), with the frame count."""
    from pfd_atomate.evaluate.metrics import frame_errors

    err = frame_errors(reference, predicted)
    return {"n_frames": err.n_frames, "energy_rmse_offset_removed_ev_per_atom": err.energy_rmse_offset_removed,
            "energy_rmse_ev_per_atom": err.energy_rmse, "force_rmse_ev_per_a": err.force_rmse}


def evaluate_run(run_dir: Path | None, data, model_files: dict[str, Path] | None = None) -> dict:
    """Zero-shot DPA-4, a run's PF (teacher) and PFD (student) when ``run_dir`` is given, and the deepmd
    ``model_files`` ({name: file}) on ``data``, per temperature and all together."""
    from pfd_atomate import queries
    from pfd_atomate.data import ModelFile
    from pfd_atomate.train.deepmd import DeepMDBackend
    from pfd_atomate.workflows.local import open_run_store

    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    models = {"DPA-4 zero-shot": ModelFile.from_path(backend.base_model_path(), backend="deepmd")}
    if run_dir is not None:
        with open_run_store(run_dir) as (store, _, _):
            models |= {name: queries.final_model(store, "Si", role)
                       for name, role in (("PF (teacher)", "teacher"), ("PFD (student)", "student"))}
    models |= {name: ModelFile.from_path(path, backend="deepmd") for name, path in (model_files or {}).items()}
    predictions = {name: backend.predict(model, data) for name, model in models.items()}
    def condition(frame) -> str:  # "md:nvt:T900" (labelling appends ";label:<job>" to the source)
        return frame.source.split(";")[0].removesuffix(":dpa4-zero-shot")

    groups = sorted({condition(f) for f in data.frames}, key=lambda g: float(g.rsplit("T", 1)[-1]))
    table = {}
    for group in [*groups, "all"]:
        idx = [i for i, f in enumerate(data.frames) if group in ("all", condition(f))]
        table[group] = {name: rmse_row(data.subset(idx), pred.subset(idx)) for name, pred in predictions.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 900.0, 1500.0])
    parser.add_argument("--per-temperature", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--run", type=Path, default=None, help="a finished demo run folder to test")
    parser.add_argument("--model", nargs="+", default=[], metavar="NAME=FILE",
                        help="deepmd model files to test too (e.g. a rebuilt teacher)")
    parser.add_argument("--relabel", action="store_true")
    parser.add_argument("--supercell", type=int, nargs=3, default=[1, 1, 1],
                        help="MD in this supercell of the 8-atom cell (2 2 2: 64 atoms)")
    parser.add_argument("--kpoints", type=int, nargs=3, default=[3, 3, 3], help="CP2K k-mesh of the frames")
    parser.add_argument("--procs", type=int, default=2, help="single-threaded MD / CP2K processes at once")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--phase", default="diamond", choices=["diamond", "beta-Sn", "bc8"],
                        help="the 8-atom cell of the MD (_common.si_phase)")
    args = parser.parse_args()
    data, meta = md_held_out(args.temperatures, args.per_temperature, args.seed, relabel=args.relabel,
                             supercell=tuple(args.supercell), kpoints=tuple(args.kpoints), n_procs=args.procs,
                             phase=args.phase)
    print(f"{len(data)} CP2K-labelled MD frames (MD {meta['md_wall_s']:.0f} s, CP2K {meta['cp2k_wall_s']:.0f} s)")
    result = {"benchmark": "held_out_md", "environment": environment(1),
              "meta": {k: v for k, v in meta.items() if k != "input_indices"}}
    result["run"] = None if args.run is None else str(args.run)
    models = dict(item.split("=", 1) for item in args.model)
    result["models"] = models
    result["rmse"] = evaluate_run(None if args.run is None else args.run.resolve(), data,
                                  {name: Path(path).resolve() for name, path in models.items()})
    for group, row in result["rmse"].items():
        print(group, {n: (round(1000 * v["energy_rmse_offset_removed_ev_per_atom"], 1),
                          round(v["force_rmse_ev_per_a"], 3)) for n, v in row.items()})
    save(f"held_out_md_{args.tag}" if args.tag else "held_out_md", result, RESULTS)


if __name__ == "__main__":
    main()
