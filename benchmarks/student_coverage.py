"""Does the student need rattled frames? One finished demo run, its teacher and its distillation set,
the student retrained with teacher-labelled strained + rattled frames added; both students tested on
the 39 held-out CP2K Si8 frames and on the run's held-out teacher (MD) frames.

The demo's student learns from teacher MD at 300-900 K (and NPT at -1/2 GPa): frames whose atoms
rarely come as close as in the strongly rattled held-out DFT frames (force RMS 3.8 eV/Å, up to
21 eV/Å). The teacher was pre-trained on such frames; the student only knows what it is shown.
This benchmark measures how much of the student's held-out error is that missing coverage:
``DistillMaker(perturb=PerturbMaker(...))`` is the switch in the flow.

The rattled frames come from ``PerturbMaker``'s own generator (dpdata, "normal" style) with their
own seed, not from the held-out set's generator.

Usage: ``python benchmarks/student_coverage.py --run runs/demo-si [--n-rattled 200] [--threads 1]``
(the run folder of a finished full demo; about 10 minutes on one core: one 12000-step training).
Writes ``<out>/student_coverage.json`` and ``.png``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import environment, parse_args, pyplot, run_distillation, save, save_figure

from pfd_atomate.cli.demo import diamond_si, held_out_dft_frames
from pfd_atomate.data import Dataset
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.perturb.core import perturb_structures
from pfd_atomate.presets import dpa4_teacher, se_e2_a_student


def metrics(reference: Dataset, predicted: Dataset) -> dict:
    """Energy RMSE (eV/atom; also with the mean offset removed) and force RMSE (eV/Å)."""
    err = frame_errors(reference, predicted)
    return {"n_frames": len(reference), "energy_rmse": err.energy_rmse,
            "energy_rmse_offset_removed": err.energy_rmse_offset_removed, "force_rmse": err.force_rmse}


def main() -> None:
    def options(parser):
        parser.add_argument("--run", type=Path, default=Path("runs/demo-si"), help="a finished full demo run folder")
        parser.add_argument("--n-rattled", type=int, default=200, help="teacher-labelled rattled frames to add")
        parser.add_argument("--cell-pert", type=float, default=0.04, help="PerturbMaker.cell_pert_fraction")
        parser.add_argument("--atom-pert", type=float, default=0.2, help="PerturbMaker.atom_pert_distance (Å)")

    args = parse_args(__doc__.splitlines()[0], options)
    steps = 1500 if args.quick else 12000
    teacher_model, student_model, train_set, teacher_test = run_distillation(args.run)
    held_out = held_out_dft_frames()
    teacher = dpa4_teacher(n_threads=args.threads)
    student = se_e2_a_student(numb_steps=steps, rcut=5.0, n_threads=args.threads)  # the demo's student

    rattled = perturb_structures([diamond_si()], args.n_rattled, args.cell_pert, args.atom_pert, "normal", seed=101)
    start = time.perf_counter()
    rattled = teacher.predict(teacher_model, rattled)
    label_wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.quick:  # the run's student has 12000 steps: retrain both at the quick length
            student_model = student.train([train_set], Path(tmp) / "md-only")
        covered = student.train([train_set, rattled], Path(tmp) / "with-rattled")
        train_wall = time.perf_counter() - start

    result = {
        "system": "diamond Si8; teacher = the run's fine-tuned DPA-4; student = demo se_e2_a (rcut 5 Å)",
        "run": str(args.run), "student_steps": steps,
        "n_md_frames": len(train_set), "n_rattled_frames": len(rattled),
        "rattled": {"cell_pert_fraction": args.cell_pert, "atom_pert_distance": args.atom_pert, "style": "normal",
                    "seed": 101, "teacher_label_wall_s": round(label_wall, 1)},
        "train_wall_s": round(train_wall, 1),
        "held_out_dft": {}, "held_out_teacher_md": {},
        "environment": environment(args.threads),
    }
    for name, model in (("md_only", student_model), ("md_plus_rattled", covered)):
        result["held_out_dft"][name] = metrics(held_out, student.predict(model, held_out))
        result["held_out_teacher_md"][name] = metrics(teacher_test, student.predict(model, teacher_test))
    result["held_out_dft"]["teacher"] = metrics(held_out, teacher.predict(teacher_model, held_out))
    save("student_coverage", result, args.out)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = ["md_only", "md_plus_rattled"]
    for ax, key, title in ((axes[0], "held_out_dft", "39 held-out CP2K frames"),
                           (axes[1], "held_out_teacher_md", f"{len(teacher_test)} held-out teacher MD frames")):
        values = [result[key][n]["force_rmse"] for n in names]
        ax.bar(["MD only", f"MD + {len(rattled)} rattled"], values, color=["tab:gray", "tab:green"])
        if key == "held_out_dft":
            ax.axhline(result[key]["teacher"]["force_rmse"], color="k", ls="--", label="teacher")
            ax.legend(fontsize=8)
        ax.set_ylabel("student force RMSE (eV/Å)")
        ax.set_title(title, fontsize=9)
    save_figure(fig, args.out / "student_coverage.png")
    for key in ("held_out_dft", "held_out_teacher_md"):
        print(key, {n: round(v["force_rmse"], 4) for n, v in result[key].items()})


if __name__ == "__main__":
    main()
