"""Speed of given DeePMD students side by side: one energy + forces + virial call, frozen and compressed.

For a student descriptor that costs more per step (e.g. se_e2_a beside a three-body se_e3), the price in MD.
Each model (``--model NAME=PATH``, a frozen ``.pth`` whose training folder holds the ``input.json`` that
``dp --pt compress`` reads) is compressed with the library's ``DeepMDBackend.compress_model`` into a folder of
its own, then every model's ASE calculator (deepmd-kit's ``DP``, what atomate2's MD uses) is timed on rattled
diamond Si supercells (``--reps``: 2 → 64 atoms, 4 → 512) for energy, forces and stress, one thread, best of
``--repeats`` calls, the models taking turns round by round so that the machine's load falls
on all alike. Ratios are to the first model.

Usage: ``python benchmarks/student_speed.py --model "default=PATH" --model "se_e3=PATH" [--reps 2 4]
[--repeats 5] [--tag TAG]``; writes ``results/student_speed[_TAG].json`` and prints it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import environment, save, set_threads

RESULTS = Path(__file__).resolve().parent / "results"


def rattled_cells(reps: int, n: int) -> list:
    """``n`` differently rattled copies (0.05 Å) of the ``reps``³ supercell of the 8-atom diamond Si cell (ASE
    Atoms): a calculator returns its stored results for positions it has seen, so every call gets new ones."""
    from ase.build import bulk

    cell = bulk("Si", "diamond", a=5.431, cubic=True).repeat((reps, reps, reps))
    cells = []
    for seed in range(n):
        atoms = cell.copy()
        atoms.rattle(0.05, seed=seed)
        cells.append(atoms)
    return cells


def one_call(calculator, atoms) -> float:
    """Wall time (s) of one energy + forces + stress evaluation (what an MD step with a barostat asks)."""
    atoms = atoms.copy()
    atoms.calc = calculator
    start = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a frozen deepmd-kit student (.pth) in its training folder (repeatable; the first is "
                             "the reference of the ratios)")
    parser.add_argument("--reps", type=int, nargs="+", default=[2, 4], help="supercells of the 8-atom cell")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and size (best is kept)")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()
    set_threads(1)
    from pfd_atomate.data import ModelFile
    from pfd_atomate.presets import se_e2_a_student

    backend = se_e2_a_student(n_threads=1)
    models = {}
    for entry in args.model:
        name, sep, path = entry.partition("=")
        if not sep:
            raise ValueError(f"--model must be NAME=PATH, got {entry!r}")
        frozen = ModelFile.from_path(path, backend="deepmd")
        compressed = backend.compress_model(frozen, Path(path).resolve().parent)
        models[f"{name}, frozen"] = frozen
        if compressed is not None:
            models[f"{name}, compressed"] = compressed
    result = {"benchmark": "student_speed", "environment": environment(1), "threads": 1, "repeats": args.repeats,
              "models": {name: model.filename for name, model in models.items()}, "sizes": {}}
    calculators = {name: backend.calculator(model) for name, model in models.items()}
    for reps in args.reps:
        cells = rattled_cells(reps, args.repeats + 1)
        times: dict[str, list[float]] = {name: [] for name in models}
        for calculator in calculators.values():
            one_call(calculator, cells[0])  # the first call builds what later ones reuse
        for atoms in cells[1:]:
            for name, calculator in calculators.items():  # one call of each model per round
                times[name].append(one_call(calculator, atoms))
        n_atoms = 8 * reps**3
        best = {name: min(t) for name, t in times.items()}
        first = next(iter(best.values()))
        result["sizes"][str(n_atoms)] = {name: {"s_per_call": s, "us_per_atom": 1e6 * s / n_atoms,
                                                "ratio_to_first": s / first} for name, s in best.items()}
        for name, s in best.items():
            print(f"{n_atoms} atoms  {name}: {1000 * s:.1f} ms per call ({s / first:.2f}x)", flush=True)
    save("student_speed" + (f"_{args.tag.lstrip('_')}" if args.tag else ""), result, RESULTS)


if __name__ == "__main__":
    main()
