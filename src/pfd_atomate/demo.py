"""The PFD demo: diamond Si from CP2K labels to a fine-tuned CHGNet and a DeePMD student.

Run ``bash scripts/demo.sh`` (installs everything first) or, in the venv,
``python -m pfd_atomate.demo [--quick] [--run-dir DIR]``. Everything runs with
``jobflow.run_locally`` on the embedded on-disk JobStore under the run folder; the
results are written to ``<run-dir>/report.json`` with parity plots next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from pfd_atomate.data import Dataset
from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.evaluate.schemas import ConvergenceCriteria, TrustWindow
from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.flows import PFDMaker
from pfd_atomate.label.cp2k import cp2k_static_maker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.store import embedded_store, fetch_dataset, fetch_model
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.train.deepmd import DeepMDBackend
from pfd_atomate.validation.parity import parity_plot

logger = logging.getLogger("pfd_atomate.demo")


def diamond_si(a: float = 5.43) -> Structure:
    """Conventional 8-atom diamond Si cell, lattice constant ``a`` in Å."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]])


def demo_maker(quick: bool = False) -> PFDMaker:
    """PFD settings of the demo (``quick``: a smoke run of a few minutes)."""
    labeller = LabelMaker(static_maker=cp2k_static_maker(kpoints=(4, 4, 4)), min_success_ratio=0.75)
    # one thread per model: two torch threads per process thrash as soon as anything else runs
    teacher = CHGNetBackend(epochs=8 if quick else 20, learning_rate=1e-3, batch_size=4, seed=0, n_threads=1)
    # the student learns energy vs volume from the virial (DeepMDBackend default); 12000 steps on ~900
    # teacher frames: 1.8 meV/atom against the teacher where 3000 steps gave 3.6 (about 3.5 min on one core)
    student = DeepMDBackend(template="se_e2_a", numb_steps=300 if quick else 12000, rcut=5.0, rcut_smth=0.5, seed=1,
                            n_threads=1)
    md_steps = 100 if quick else 300
    stages = [
        Stage(name="nvt", task_groups=[TaskGroup(temperatures=[300.0, 900.0], ensemble="nvt", n_steps=md_steps,
                                                 time_step=2.0, traj_interval=20)]),
    ]
    if not quick:
        stages.append(
            Stage(name="npt", task_groups=[TaskGroup(temperatures=[600.0], pressures=[0.0, 2.0], ensemble="npt",
                                                     n_steps=md_steps, time_step=2.0, traj_interval=20)])
        )
    finetune = FinetuneMaker(
        trainer=teacher,
        stages=stages,
        select=SelectMaker(n_select=2 if quick else 4, method="entropy", chunk_size=1),
        criteria=ConvergenceCriteria(energy_rmse=0.005, force_rmse=0.10, frame_energy=0.005, frame_force=0.12,
                                     accurate_ratio=0.8),
        trust_window=TrustWindow(),
        max_iterations=2 if quick else 3,
        on_not_converged="continue",
        init_from="previous",
    )
    distill = DistillMaker(
        student=student,
        task_groups=[
            TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", n_steps=200 if quick else 1000,
                      time_step=2.0, traj_interval=5),
            # the student must know how energy changes with volume: the teacher explores NPT too
            TaskGroup(temperatures=[600.0], pressures=[-1.0, 2.0], ensemble="npt", n_steps=100 if quick else 1000,
                      time_step=2.0, traj_interval=5),
        ],
        test_fraction=0.1,
    )
    return PFDMaker(
        perturb=PerturbMaker(n_frames=3 if quick else 6, cell_pert_fraction=0.03, atom_pert_distance=0.1, seed=0),
        label=labeller,
        finetune=finetune,
        distill=distill,
    )


def _setup_logging(run_dir: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "demo.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("custodian", "matplotlib", "numba", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_demo(run_dir: Path, quick: bool = False) -> dict:
    """Run the demo flow and write ``report.json`` and parity plots into ``run_dir``."""
    from jobflow import run_locally

    if shutil.which("cp2k.psmp") is None and shutil.which("cp2k") is None:
        raise RuntimeError("CP2K is not installed: run `bash scripts/setup_env.sh` (apt-get install cp2k cp2k-data)")
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    structure = diamond_si()
    maker = demo_maker(quick=quick)
    flow = maker.make(structure)
    store = embedded_store(run_dir)
    logger.info("PFD demo (%s) on %s: %d jobs to start with; run folder %s",
                "quick" if quick else "full", structure.composition.reduced_formula, len(flow.jobs), run_dir)
    start = time.perf_counter()
    run_locally(flow, store=store, root_dir=run_dir / "jobs", create_folders=True, ensure_success=True, log=False)
    wall = time.perf_counter() - start

    store.connect()
    doc = store.get_output(flow.jobs[-1].uuid, load=True)
    teacher_loc = next(m for m in doc["lineage"] if m["role"] == "teacher")["location"]
    student_loc = next(m for m in doc["lineage"] if m["role"] == "student")["location"]
    teacher = fetch_model(store, teacher_loc["job_uuid"])
    student = fetch_model(store, student_loc["job_uuid"])
    test_set = fetch_dataset(store, doc["datasets"]["held_out_dft"]["job_uuid"], "test_set")
    teacher_pred = maker.finetune.trainer.predict(teacher, test_set)
    student_pred = maker.distill.student.predict(student, test_set)
    foundation_pred = maker.finetune.trainer.predict(None, test_set) if _predicts_base(maker) else None

    def rmse(pred: Dataset | None) -> dict | None:
        if pred is None:
            return None
        err = frame_errors(test_set, pred)
        e = np.asarray(err.frame_energy_error)
        return {
            "energy_rmse_ev_per_atom": err.energy_rmse,
            # a foundation model's energies sit on another reference: compare shapes too
            "energy_rmse_mean_offset_removed_ev_per_atom": float(np.sqrt(np.mean((e - e.mean()) ** 2))),
            "force_rmse_ev_per_a": err.force_rmse,
        }

    preds = {"PF (fine-tuned CHGNet)": teacher_pred, "PFD (DeePMD se_e2_a student)": student_pred}
    parity_plot(test_set, {k: v for k, v in preds.items()}, run_dir / "parity_dft_test.png",
                title=f"Si, {len(test_set)} held-out CP2K frames")
    parity_plot(test_set, {"PF (fine-tuned CHGNet)": teacher_pred}, run_dir / "parity_pf.png",
                title="fine-tuned teacher vs CP2K (held out)")
    parity_plot(test_set, {"PFD (DeePMD student)": student_pred}, run_dir / "parity_pfd.png",
                title="distilled student vs CP2K (held out)")
    report = {
        "system": "diamond Si (8-atom cell)",
        "mode": "quick" if quick else "full",
        "labeller": doc["labeller"],
        "dft_labels_spent": doc["n_dft_labels"],
        "dft_labels_initial": doc["n_initial_labels"],
        "dft_labels_in_loop": doc["n_loop_labels"],
        "label_failures": doc["n_label_failures"],
        "iterations": doc["n_iterations"],
        "converged": doc["converged"],
        "iteration_metrics": [
            {k: it[k] for k in ("stage", "iteration", "n_train_frames", "n_labelled", "energy_rmse", "force_rmse",
                                "accurate_ratio", "converged", "n_added")}
            for it in doc["iterations"]
        ],
        "held_out_dft_frames": len(test_set),
        "PF_teacher_on_held_out_dft": rmse(teacher_pred),
        "PFD_student_on_held_out_dft": rmse(student_pred),
        "foundation_on_held_out_dft": rmse(foundation_pred),
        "student_vs_teacher_held_out": doc["student_teacher_test"] and {
            "energy_rmse_ev_per_atom": doc["student_teacher_test"]["energy_rmse"],
            "force_rmse_ev_per_a": doc["student_teacher_test"]["force_rmse"],
            "n_frames": doc["student_teacher_test"]["n_frames"],
        },
        "distill_train_frames": doc["n_distill_frames"],
        "models": {m["role"]: {"backend": m["backend"], "sha256": m["sha256"],
                               "job_uuid": (m.get("location") or {}).get("job_uuid")} for m in doc["lineage"]},
        "wall_time_s": round(wall, 1),
        "machine": {"cpus": _cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "plots": ["parity_dft_test.png", "parity_pf.png", "parity_pfd.png"],
        "store": str(run_dir / "store"),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    logger.info("report written to %s (wall time %.0f s)", run_dir / "report.json", wall)
    return report


def _predicts_base(maker: PFDMaker) -> bool:
    return getattr(maker.finetune.trainer, "name", "") == "chgnet"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer labels, steps and epochs")
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (default runs/demo-si[-quick])")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path("runs") / ("demo-si-quick" if args.quick else "demo-si")
    if (run_dir / "store").exists():
        raise SystemExit(f"{run_dir} already holds a run; pass another --run-dir or remove it")
    report = run_demo(run_dir.resolve(), quick=args.quick)
    print(json.dumps({k: report[k] for k in ("dft_labels_spent", "iterations", "PF_teacher_on_held_out_dft",
                                            "PFD_student_on_held_out_dft", "wall_time_s")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
