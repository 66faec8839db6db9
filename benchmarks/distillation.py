"""Distillation: is the student much faster than the teacher at nearly the same accuracy? (PFD promise b)

One run, one system, both sides of the trade measured together:

1. teacher: pretrained CHGNet fine-tuned on the first ``--n-labels`` (default 40) CP2K PBE
   labels of the benchmarks' diamond Si8 data (``_dft_labels.py``; cached, real DFT);
2. distillation through pfd-atomate's own ``DistillMaker`` flow under ``run_locally`` on an
   embedded store: teacher MD (NVT 300/600/900 K and NPT 600 K at -1/+2 GPa, 1000 steps of
   2 fs each, every 5th frame), the teacher relabels those frames and its own training frames,
   and a DeePMD se_e2_a student (the demo's: rcut 5 Å, 12000 steps, virial trained) is trained
   from scratch once;
3. an ablation student trained on the *same* teacher frames with the previous default
   (3000 steps, no virial), to show what the virial and the longer training buy;
4. accuracy of teacher and students on 39 held-out CP2K frames (never trained on) and of the
   students against the teacher on held-out teacher frames;
5. speed: seconds per atom per MD step of teacher and student on 64- and 512-atom cells
   (``inference_speed.seconds_per_atom_step``), each timing in its own process.

Usage: ``python benchmarks/distillation.py [--quick] [--threads 2] [--n-labels 40]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _common import Timer, distillation_sets, environment, parse_args, pyplot, save, save_figure


def errors(backend, model, reference) -> dict:
    """Energy RMSE (eV/atom; also with the mean offset removed) and force RMSE (eV/Å) against ``reference``."""
    from pfd_atomate.evaluate.metrics import frame_errors

    err = frame_errors(reference, backend.predict(model, reference))
    return {"energy_rmse": err.energy_rmse, "energy_rmse_offset_removed": err.energy_rmse_offset_removed,
            "force_rmse": err.force_rmse, "n_frames": len(reference)}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return None if a is None or not b else a / b


def distill(teacher_backend, teacher, student_backend, training_frames, held_out, quick: bool, workdir: Path):
    """Run the DistillMaker flow; returns (student ModelFile, teacher-labelled train set, teacher test set, wall s)."""
    from jobflow import run_locally

    from pfd_atomate.cli.demo import diamond_si
    from pfd_atomate.distill.flows import DistillMaker
    from pfd_atomate.explore.schemas import TaskGroup
    from pfd_atomate.store import embedded_store, fetch_model

    steps = 200 if quick else 1000
    maker = DistillMaker(
        teacher=teacher_backend,
        student=student_backend,
        task_groups=[
            TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", n_steps=steps, time_step=2.0,
                      traj_interval=5),
            TaskGroup(temperatures=[600.0], pressures=[-1.0, 2.0], ensemble="npt", n_steps=steps, time_step=2.0,
                      traj_interval=5),
        ],
        test_fraction=0.1,
    )
    flow = maker.make(teacher, diamond_si(), dft_test_set=held_out, extra_frames=[training_frames])
    store = embedded_store(workdir)
    with Timer() as t:
        run_locally(flow, store=store, root_dir=workdir / "jobs", create_folders=True, ensure_success=True, log=False)
    store.connect()
    uuid = {job.metadata["distill_step"]: job.uuid for job in flow.jobs}  # this flow's, whatever else the store holds
    label, split, train = uuid["teacher label"], uuid["split"], uuid["train student"]
    return fetch_model(store, train), *distillation_sets(store, label, split), t.seconds


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(11, 4.4))
    names = list(result["held_out_dft"])
    x = np.arange(len(names))
    e = [1000 * result["held_out_dft"][n]["energy_rmse"] for n in names]
    f = [1000 * result["held_out_dft"][n]["force_rmse"] for n in names]
    ax_a.bar(x - 0.2, e, 0.4, label="energy RMSE (meV/atom)")
    ax_a.bar(x + 0.2, f, 0.4, label="force RMSE (meV/Å)")
    for xi, (ei, fi) in enumerate(zip(e, f)):
        ax_a.annotate(f"{ei:.1f}", (xi - 0.2, ei), ha="center", va="bottom", fontsize=7)
        ax_a.annotate(f"{fi:.0f}", (xi + 0.2, fi), ha="center", va="bottom", fontsize=7)
    ax_a.set_yscale("log")
    ax_a.set_xticks(x, [textwrap.fill(n, 24) for n in names], fontsize=7)
    ax_a.set_title(f"accuracy on {result['n_held_out_dft']} held-out CP2K frames")
    ax_a.legend(fontsize=7)
    sizes = result["speed"]["n_atoms"]
    for name, values in result["speed"]["seconds_per_atom_step"].items():
        ax_s.plot(sizes, [np.nan if v is None else v for v in values], "o-", label=name)
    ax_s.set_xscale("log")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("atoms")
    ax_s.set_ylabel("s / atom / MD step")
    ratios = ", ".join(f"{n}: {r:.0f}x" for n, r in zip(sizes, result["speed"]["teacher_over_student"]) if r)
    ax_s.set_title(f"MD cost ({result['environment']['device']}); teacher ÷ student {ratios}", fontsize=9)
    ax_s.legend(fontsize=7)
    fig.suptitle("distillation: fine-tuned CHGNet teacher vs DeePMD se_e2_a student (diamond Si, CP2K PBE labels)")
    save_figure(fig, path)


def main() -> None:
    from _dft_labels import si_pool_and_held_out
    from inference_speed import timed_in_subprocess

    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-labels", type=int, default=40, help="CP2K labels the teacher is fine-tuned on")
        p.add_argument("--mem-limit-gb", type=float, default=16.0, help="address-space limit of each timing, GiB")

    args = parse_args("teacher vs distilled student: accuracy and speed in one run", extra)
    start = time.perf_counter()
    env = environment(args.threads)
    pool, held_out, label_meta = si_pool_and_held_out()
    training = pool.subset(range(args.n_labels), name="teacher-training")
    student_steps = 1000 if args.quick else 12000
    students = {
        f"student: se_e2_a, {student_steps} steps, virial (default)": DeepMDBackend(
            template="se_e2_a", numb_steps=student_steps, rcut=5.0, rcut_smth=0.5, seed=1, n_threads=args.threads),
        f"student: se_e2_a, {student_steps // 4} steps, no virial (old default)": DeepMDBackend(
            template="se_e2_a", numb_steps=student_steps // 4, rcut=5.0, rcut_smth=0.5, seed=1, use_virial=False,
            n_threads=args.threads),
    }
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["PFD_MODEL_CACHE"] = str(tmp / "model-cache")  # keep the user's model cache clean
        teacher_backend = CHGNetBackend(epochs=4 if args.quick else 20, learning_rate=1e-3, batch_size=4, seed=0,
                                        n_threads=args.threads)
        with Timer() as t:
            teacher = teacher_backend.train([training], tmp / "teacher")
        walls["teacher fine-tune"] = t.seconds
        (default_name, default_backend), (ablation_name, ablation_backend) = students.items()
        student, train_set, teacher_test, walls["distill flow (teacher MD + labels + student)"] = distill(
            teacher_backend, teacher, default_backend, training, held_out, args.quick, tmp / "distill")
        with Timer() as t:
            ablation = ablation_backend.train([train_set], tmp / "ablation")
        walls[ablation_name] = t.seconds
        models = {"teacher: CHGNet fine-tuned": (teacher_backend, teacher), default_name: (default_backend, student),
                  ablation_name: (ablation_backend, ablation)}
        held = {name: errors(b, m, held_out) for name, (b, m) in models.items()}
        vs_teacher = {name: errors(b, m, teacher_test) for name, (b, m) in models.items()
                      if not name.startswith("teacher")}
        for name, row in held.items():
            print(f"{name:50s} DFT held-out: E {1000 * row['energy_rmse']:6.2f} meV/atom  "
                  f"F {1000 * row['force_rmse']:5.0f} meV/Å")
        reps = [2] if args.quick else [2, 4]
        speed: dict[str, list] = {"teacher: CHGNet fine-tuned": [], default_name: []}
        for n in reps:
            for name in speed:
                backend, model = models[name]
                value, error = timed_in_subprocess(args.mem_limit_gb, backend, model, n, 5 if n == 2 else 2,
                                                   2, args.threads)
                speed[name].append(None if value is None else value[0])
                print(f"{8 * n**3:5d} atoms {name:50s} " + (error or f"{value[0]:.2e} s/atom/step"))
    t_speed, s_speed = speed["teacher: CHGNet fine-tuned"], speed[default_name]
    result = {
        "benchmark": "distillation",
        "mode": "quick" if args.quick else "full",
        "labels": "CP2K PBE (DFT) for diamond Si8, the benchmarks' cached data set (see _dft_labels.py)",
        "label_generation": {k: v for k, v in label_meta.items() if k != "input_indices"},
        "n_teacher_labels": args.n_labels,
        "n_held_out_dft": len(held_out),
        "n_student_train_frames": len(train_set),
        "n_teacher_test_frames": len(teacher_test),
        "held_out_dft": held,
        "student_vs_teacher": vs_teacher,
        "student_over_teacher_force_rmse_dft": ratio(held[default_name]["force_rmse"],
                                                     held["teacher: CHGNet fine-tuned"]["force_rmse"]),
        "speed": {
            "n_atoms": [8 * n**3 for n in reps],
            "seconds_per_atom_step": speed,
            "teacher_over_student": [ratio(a, b) for a, b in zip(t_speed, s_speed)],
        },
        "training_wall_s": walls,
        "wall_s": time.perf_counter() - start,
        "environment": env,
    }
    print(f"student/teacher force RMSE on DFT: {result['student_over_teacher_force_rmse_dft']}; "
          f"teacher/student time: {result['speed']['teacher_over_student']}")
    save("distillation", result, args.out)
    plot(result, args.out / "distillation.png")


if __name__ == "__main__":
    main()
