"""Short of fit or of generalisation? A student's copy error on its own training frames against held-out ones (issue 12, item 5).

A student that copies its teacher far better on the frames it was trained on than on held-out teacher frames of the
same kind lacks frames (or regularisation); one that misses both alike has not fitted its teacher (too few steps,
too small a model, or a descriptor that cannot express the teacher's forces), and more frames will not help. The
teacher-labelled frames of ``student_cell_sizes.py --run`` (the same train / held-out split the students were
trained on) are grouped by cell size and by what made them (the source of each frame: teacher MD per ensemble and
temperature, or the strained + rattled ``perturb`` copies), and each ``--model`` is scored on both halves of every
group: force RMSE (eV/Å) and energy RMSE (eV/atom) against the teacher's labels.

Usage: ``.venv/bin/python benchmarks/student_fit.py --run benchmarks/data/si_phases_teacher_frames_k300_w100_supercell.json.gz
--model NAME=PATH [--model ...] [--tag T]``; writes ``results/student_fit[_T].json``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from _common import environment, run_models, save, set_threads
from student_cell_sizes import teacher_frames
from student_coverage import metrics

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def kind(source: str) -> str:
    """What made a frame, from its ``source``: ``"perturb"``, ``"md nvt 300 K"`` (NPT: with its pressure), else
    ``"other"``."""
    if source.startswith("perturb"):
        return "perturb"
    md = re.match(r"md:([a-z]+):T([0-9.]+)(?::P([-0-9.]+))?", source)
    if md is None:
        return "other"
    temperature = f"{float(md.group(2)):g} K"
    return f"md {md.group(1)} {temperature}" + (f" {float(md.group(3)):g} GPa" if md.group(3) else "")


def groups(dataset) -> dict[str, list[int]]:
    """Frame indices of ``dataset`` by ``"<n> atoms, <kind>"`` and by ``"<n> atoms"`` (all kinds)."""
    found: dict[str, list[int]] = {}
    for i, frame in enumerate(dataset.frames):
        for key in (f"{frame.n_atoms} atoms", f"{frame.n_atoms} atoms, {kind(frame.source)}"):
            found.setdefault(key, []).append(i)
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="teacher frames as student_cell_sizes.py --run takes")
    parser.add_argument("--model", action="append", required=True, help="a student, NAME=PATH (deepmd-kit file)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    set_threads(1)
    backend, models = run_models(None, args.model)
    del models["DPA-4 zero-shot"]  # the students only; their teacher made the labels
    train, test = teacher_frames(args.run)
    by_group = {"train": groups(train), "held out": groups(test)}
    table: dict = {}
    for name, model in models.items():
        predicted = {"train": backend.predict(model, train), "held out": backend.predict(model, test)}
        reference = {"train": train, "held out": test}
        table[name] = {}
        for group in sorted(set(by_group["train"]) | set(by_group["held out"])):
            row = {}
            for part in ("train", "held out"):
                indices = by_group[part].get(group, [])
                if indices:
                    row[part] = metrics(reference[part].subset(indices), predicted[part].subset(indices))
            table[name][group] = row
            print(name, group, {p: (r["n_frames"], round(r["force_rmse"], 4), round(1000 * r["energy_rmse"], 1))
                                for p, r in row.items()}, flush=True)
    payload = {"run": str(args.run), "models": dict(m.split("=", 1) for m in args.model),
               "units": {"force_rmse": "eV/Å", "energy_rmse": "eV/atom"}, "copy_error": table,
               "environment": environment(1)}
    out = save(f"student_fit{'_' + args.tag if args.tag else ''}", payload, RESULTS)
    print("saved", out)


if __name__ == "__main__":
    main()
