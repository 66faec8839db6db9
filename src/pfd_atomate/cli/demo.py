"""The PFD demo: diamond Si from CP2K labels to a fine-tuned DPA-4 teacher and a compressed DeePMD student.

Run ``bash scripts/demo.sh`` (installs everything first) or, in the venv,
``pfd demo [--quick] [--run-dir DIR] [--workers N] [--teacher dpa4|chgnet]``.
The flow runs on the local engine (:mod:`pfd_atomate.workflows.local`: FireWorks workers on the
run folder's own database), so a second call on the same run folder resumes a killed run
instead of paying its CP2K labels again. Results go to ``<run-dir>/report.json`` with parity
plots next to it.

The models are judged on held-out CP2K frames that no PFD run made: the 39 held-out frames of
the benchmarks' Si8 set (``benchmarks/data/``, strained and rattled cells, same CP2K settings).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

from pymatgen.core import Lattice, Structure

from pfd_atomate import queries
from pfd_atomate.cli.progress import describe
from pfd_atomate.cli.report import read_dataset
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
from pfd_atomate.presets import chgnet_teacher, dpa4_teacher, se_e2_a_student
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.store import fetch_dataset, fetch_model
from pfd_atomate.validation.parity import parity_plot

logger = logging.getLogger("pfd_atomate.cli.demo")

#: the benchmarks' CP2K Si8 labels (3x3x3 k-points), whose last 39 filtered frames are held out
HELD_OUT_FILE = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "si8_cp2k_k333_n200_s11.json.gz"
KPOINTS = (3, 3, 3)  # the held-out set's CP2K settings: labels of the run and of the test agree


def diamond_si(a: float = 5.43) -> Structure:
    """Conventional 8-atom diamond Si cell, lattice constant ``a`` in Å."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]])


def demo_maker(quick: bool = False, teacher: str = "dpa4") -> PFDMaker:
    """PFD settings of the demo (``quick``: a smoke run of a few minutes; ``teacher``: "dpa4" or "chgnet")."""
    labeller = LabelMaker(static_maker=cp2k_static_maker(kpoints=KPOINTS), min_success_ratio=0.75)
    # one thread per model: the local engine runs two single-threaded workers side by side
    if teacher == "dpa4":
        # half the library's least fine-tune (presets.DPA4_MIN_STEPS) keeps the demo near 12 minutes
        backend = dpa4_teacher(n_threads=1, numb_steps=100 if quick else 400)
    elif teacher == "chgnet":
        backend = chgnet_teacher(epochs=8 if quick else 20, n_threads=1)
    else:
        raise ValueError(f"teacher must be 'dpa4' or 'chgnet', got {teacher!r}")
    student = se_e2_a_student(numb_steps=300 if quick else 12000, rcut=5.0, n_threads=1)
    md = {"n_steps": 100 if quick else 300, "time_step": 2.0, "traj_interval": 20}
    stages = [Stage(name="nvt", task_groups=[TaskGroup(temperatures=[300.0, 900.0], ensemble="nvt", **md)])]
    if not quick:
        npt = TaskGroup(temperatures=[600.0], pressures=[0.0, 2.0], ensemble="npt", **md)
        stages.append(Stage(name="npt", task_groups=[npt]))
    finetune = FinetuneMaker(
        trainer=backend,
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
            # the student must know how energy changes with volume: the teacher explores NPT too (1 ps:
            # ASE's NPT costs two teacher calls per step, 0.5-1 s per step here)
            TaskGroup(temperatures=[600.0], pressures=[-1.0, 2.0], ensemble="npt", n_steps=100 if quick else 500,
                      time_step=2.0, traj_interval=5),
        ],
        # MD frames only: the demo's short, small student loses force accuracy on MD frames when it also
        # learns strained + rattled frames (benchmarks/README.md, "Student coverage"); the default student has room
        perturb=None,
        test_fraction=0.1,
    )
    return PFDMaker(
        perturb=PerturbMaker(n_frames=3 if quick else 6, cell_pert_fraction=0.03, atom_pert_distance=0.1, seed=0),
        label=labeller,
        finetune=finetune,
        distill=distill,
    )


def held_out_dft_frames() -> Dataset | None:
    """The 39 independent held-out CP2K Si8 frames (``None`` when the benchmarks' file is absent)."""
    if not HELD_OUT_FILE.is_file():
        return None
    from pfd_atomate.select.filters import FrameFilter

    kept, _ = FrameFilter().apply(read_dataset(HELD_OUT_FILE))
    return kept.subset(range(160, len(kept)), name="si8-cp2k-held-out")


def _setup_logging(run_dir: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):  # the CLI's default console handler: one line per message, not two
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "demo.log")):
        handler.setFormatter(fmt)
        handler.setLevel(logging.INFO)  # FireWorks sets its loggers to DEBUG
        root.addHandler(handler)
    for noisy in ("custodian", "matplotlib", "numba", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _rmse(reference: Dataset, predicted: Dataset | None) -> dict | None:
    if predicted is None:
        return None
    err = frame_errors(reference, predicted)
    return {
        "n_frames": err.n_frames,
        "energy_rmse_ev_per_atom": err.energy_rmse,
        "energy_rmse_mean_offset_removed_ev_per_atom": err.energy_rmse_offset_removed,
        "force_rmse_ev_per_a": err.force_rmse,
    }


def run_demo(run_dir: Path, quick: bool = False, workers: int = 2, teacher: str = "dpa4",
             on_progress=None) -> dict:
    """Run (or resume) the demo flow and write ``report.json`` and parity plots into ``run_dir``.

    ``on_progress`` is passed to :func:`~pfd_atomate.workflows.local.run_flow` (default: log lines).
    """
    from pfd_atomate.workflows.local import open_run_store, run_flow

    if shutil.which("cp2k.psmp") is None and shutil.which("cp2k") is None:
        raise RuntimeError("CP2K is not installed: run `bash scripts/setup_env.sh` (apt-get install cp2k cp2k-data)")
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    structure = diamond_si()
    maker = demo_maker(quick=quick, teacher=teacher)
    flow = maker.make(structure)
    logger.info("PFD demo (%s, %s teacher) on %s with %d workers; run folder %s",
                "quick" if quick else "full", teacher, structure.composition.reduced_formula, workers, run_dir)

    last = [""]

    def progress(view) -> None:
        line = describe(view.states)
        if line != last[0]:
            last[0] = line
            logger.info("%s", line)

    result = run_flow(flow, run_dir, workers=workers, on_progress=on_progress or progress)
    if not result.completed:
        raise RuntimeError(f"the demo flow ended {result.state}: {result.failed}")

    with open_run_store(run_dir) as (store, _, _):
        doc = queries.run_report(store, result.flow_uuid)
        lineage = {m["role"]: m for m in doc["lineage"]}
        teacher_model = fetch_model(store, lineage["teacher"]["location"]["job_uuid"])
        student_model = fetch_model(store, lineage["student"]["location"]["job_uuid"])
        held_out = doc["datasets"]["held_out_dft"]
        last_iteration = fetch_dataset(store, held_out["job_uuid"], held_out["field"])
    independent = held_out_dft_frames()
    test_set = independent if independent is not None else last_iteration
    teacher_backend, student_backend = maker.finetune.trainer, maker.distill.student
    teacher_pred = teacher_backend.predict(teacher_model, test_set)
    student_pred = student_backend.predict(student_model, test_set)
    foundation_pred = _foundation_predictions(teacher_backend, test_set)

    name_pf, name_pfd = f"PF (fine-tuned {teacher.upper()})", "PFD (compressed se_e2_a student)"
    title = f"Si8, {len(test_set)} held-out CP2K frames"
    parity_plot(test_set, {name_pf: teacher_pred, name_pfd: student_pred}, run_dir / "parity_dft_test.png", title=title)
    parity_plot(test_set, {name_pf: teacher_pred}, run_dir / "parity_pf.png", title=f"teacher vs CP2K ({title})")
    parity_plot(test_set, {name_pfd: student_pred}, run_dir / "parity_pfd.png", title=f"student vs CP2K ({title})")
    report = {
        "system": "diamond Si (8-atom cell)",
        "mode": "quick" if quick else "full",
        "teacher": teacher,
        "workers": workers,
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
        "held_out_set": "independent: 39 strained/rattled Si8 frames of benchmarks/data (CP2K, same settings)"
        if independent is not None else "the last iteration set (benchmarks/data not found)",
        "PF_teacher_on_held_out_dft": _rmse(test_set, teacher_pred),
        "PFD_student_on_held_out_dft": _rmse(test_set, student_pred),
        "foundation_on_held_out_dft": _rmse(test_set, foundation_pred),
        "PF_teacher_on_last_iteration_set": _rmse(last_iteration, teacher_backend.predict(teacher_model, last_iteration)),
        "compressed_vs_uncompressed_student": doc["compression_check"] and {
            "energy_rmse_ev_per_atom": doc["compression_check"]["energy_rmse"],
            "force_rmse_ev_per_a": doc["compression_check"]["force_rmse"],
            "max_force_error_ev_per_a": max(doc["compression_check"]["frame_force_max"]),
            "n_frames": doc["compression_check"]["n_frames"],
        },
        "student_vs_teacher_held_out": doc["student_teacher_test"] and {
            "energy_rmse_ev_per_atom": doc["student_teacher_test"]["energy_rmse"],
            "force_rmse_ev_per_a": doc["student_teacher_test"]["force_rmse"],
            "n_frames": doc["student_teacher_test"]["n_frames"],
        },
        "distill_train_frames": doc["n_distill_frames"],
        "models": {m["role"]: {"backend": m["backend"], "sha256": m["sha256"],
                               "job_uuid": (m.get("location") or {}).get("job_uuid")} for m in doc["lineage"]},
        "resumed": result.resumed,
        "jobs_rerun_on_resume": result.rerun,
        "wall_time_s": round(result.wall_time_s, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "platform": platform.platform(), "device": teacher_backend.compute_device},
        "plots": ["parity_dft_test.png", "parity_pf.png", "parity_pfd.png"],
        "store": str(run_dir / "db"),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    logger.info("report written to %s (wall time %.0f s)", run_dir / "report.json", result.wall_time_s)
    return report


def _foundation_predictions(backend, test_set: Dataset) -> Dataset | None:
    """The foundation model's own predictions (zero-shot), for comparison."""
    from pfd_atomate.data import ModelFile

    if getattr(backend, "name", "") == "chgnet":
        return backend.predict(None, test_set)
    path = backend.base_model_path() if hasattr(backend, "base_model_path") else None
    return None if path is None else backend.predict(ModelFile.from_path(path, backend="deepmd"), test_set)
