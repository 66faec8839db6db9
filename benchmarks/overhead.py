"""Overhead: the share of a PFD run's wall time spent outside labelling, training and MD.

Runs a small but complete PFD flow (perturb -> label -> fine-tune loop with exploration,
selection and testing -> distillation -> report) for fcc Cu with ``jobflow.run_locally``
on the embedded on-disk JobStore (maggma MontyStore, sqlite), and times, by wrapping the
functions that do the work:

- labelling: atomate2 static calculations (``AseRelaxMaker.run_ase``; the labeller is EMT
  through atomate2's ``ForceFieldStaticMaker``, a stand-in for DFT - with real DFT this
  share would dwarf everything else, so the *absolute* overhead seconds are the figure to
  carry over);
- training: ``CHGNetBackend.train`` (teacher fine-tuning) and ``DeepMDBackend.train``
  (student, ``dp`` subprocesses);
- MD: atomate2 ``AseMDMaker.run_ase`` (exploration and distillation MD);
- inference: ``predict`` of either backend (model tests, teacher labels of distillation frames);
- selection: entropy/random selection;
- store I/O: ``JobStore.update`` (writing outputs, model files as base64) and
  ``JobStore.get_output`` (resolving references).

The rest of the wall time is jobflow orchestration, (de)serialization, job folders,
atomate2 task documents and Python/library start-up inside jobs.

Usage: ``python benchmarks/overhead.py [--quick] [--threads 2]``.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import environment, parse_args, pyplot, save, save_figure

EMT = {"@module": "ase.calculators.emt", "@callable": "EMT"}

_seconds: dict[str, float] = defaultdict(float)
_calls: dict[str, int] = defaultdict(int)
_active: list[str] = []


def _timed(category: str, func):
    """Wrap ``func`` so its wall time counts to ``category`` (nested timed calls count once, to the outer)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if _active:  # already inside a timed region
            return func(*args, **kwargs)
        _active.append(category)
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            _seconds[category] += time.perf_counter() - start
            _calls[category] += 1
            _active.pop()

    return wrapper


def instrument() -> None:
    """Wrap the work functions of every category (in this process; run_locally runs jobs in-process)."""
    from atomate2.ase.jobs import AseRelaxMaker
    from atomate2.ase.md import AseMDMaker
    from jobflow import JobStore

    import pfd_atomate.select.jobs as select_jobs
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    targets = [
        ("labelling", AseRelaxMaker, "run_ase"),
        ("training", CHGNetBackend, "train"),
        ("training", DeepMDBackend, "train"),
        ("md", AseMDMaker, "run_ase"),
        ("inference", CHGNetBackend, "predict"),
        ("inference", DeepMDBackend, "predict"),
        ("selection", select_jobs, "entropy_select"),
        ("selection", select_jobs, "random_select"),
        ("store I/O", JobStore, "update"),
        ("store I/O", JobStore, "get_output"),
    ]
    for category, owner, name in targets:
        setattr(owner, name, _timed(category, getattr(owner, name)))


def pfd_maker(quick: bool):
    """The PFD settings of the run (``quick``: those of the flow test)."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    from pfd_atomate.distill.flows import DistillMaker
    from pfd_atomate.evaluate.schemas import ConvergenceCriteria
    from pfd_atomate.explore.schemas import Stage, TaskGroup
    from pfd_atomate.finetune.jobs import FinetuneMaker
    from pfd_atomate.flows import PFDMaker
    from pfd_atomate.label.flows import LabelMaker
    from pfd_atomate.perturb.jobs import PerturbMaker
    from pfd_atomate.select.jobs import SelectMaker
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    teacher = CHGNetBackend(epochs=4 if quick else 6, batch_size=4, learning_rate=2e-3, seed=0, n_threads=2)
    student = DeepMDBackend(template="se_e2_a", numb_steps=200 if quick else 600, rcut=4.5, rcut_smth=0.5, seed=0)
    group = TaskGroup(temperatures=[600.0], ensemble="nvt", n_steps=30 if quick else 80, time_step=2.0,
                      traj_interval=5)
    return PFDMaker(
        perturb=PerturbMaker(n_frames=4 if quick else 8, cell_pert_fraction=0.02, atom_pert_distance=0.08, seed=3),
        label=LabelMaker(static_maker=ForceFieldStaticMaker(force_field_name=EMT), min_success_ratio=0.75),
        finetune=FinetuneMaker(
            trainer=teacher,
            stages=[Stage(task_groups=[group]), Stage(task_groups=[group.model_copy(update={"temperatures": [900.0]})])],
            select=SelectMaker(n_select=3 if quick else 6, method="entropy"),
            criteria=ConvergenceCriteria(energy_rmse=0.02, force_rmse=0.25, accurate_ratio=None),
            max_iterations=2 if quick else 3,
            init_from="previous",
            on_not_converged="continue",
        ),
        distill=DistillMaker(
            student=student,
            task_groups=[TaskGroup(temperatures=[700.0], ensemble="nvt", n_steps=60 if quick else 150, time_step=2.0,
                                   traj_interval=2 if quick else 5)],
            test_fraction=0.2,
        ),
    )


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    shares = result["share"]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(shares)
    ax.barh(names, [100 * shares[n] for n in names],
            color=["tab:gray" if n in ("store I/O", "other (jobflow, serialization, I/O)") else "tab:blue"
                   for n in names])
    for i, n in enumerate(names):
        ax.text(100 * shares[n] + 0.5, i, f"{result['seconds'][n]:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("share of wall time (%)")
    ax.set_title(f"PFD run ({result['mode']}): {result['wall_s']:.0f} s, {result['n_jobs_run']} jobs; "
                 f"overhead {100 * result['overhead_share']:.1f} %", fontsize=9)
    ax.invert_yaxis()
    save_figure(fig, path)


def main() -> None:
    args = parse_args("share of a PFD run's wall time outside labelling/training/MD")
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from pfd_atomate.store import embedded_store

    env = environment(args.threads)
    instrument()
    structure = Structure(Lattice.cubic(3.61), ["Cu"] * 4,
                          [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * (2, 1, 1)
    maker = pfd_maker(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PFD_MODEL_CACHE"] = str(Path(tmp) / "model-cache")  # keep the user's model cache clean
        run_dir = Path(tmp)
        flow = maker.make(structure)
        store = embedded_store(run_dir)
        start = time.perf_counter()
        responses = run_locally(flow, store=store, root_dir=run_dir / "jobs", create_folders=True,
                                ensure_success=True)
        wall = time.perf_counter() - start
        store_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file() and "jobs" not in p.parts)
        store.connect()
        report = store.get_output(flow.jobs[-1].uuid, load=True)

    seconds = {k: _seconds.get(k, 0.0) for k in ("labelling", "training", "md", "inference", "selection", "store I/O")}
    seconds["other (jobflow, serialization, I/O)"] = wall - sum(seconds.values())
    work = seconds["labelling"] + seconds["training"] + seconds["md"]
    result = {
        "benchmark": "overhead",
        "mode": "quick" if args.quick else "full",
        "flow": "PFD on fcc Cu (8 atoms): EMT labels via atomate2 ForceFieldStaticMaker (stand-in for DFT), "
                "CHGNet teacher, DeePMD se_e2_a student, run_locally on MontyStore (sqlite)",
        "wall_s": wall,
        "n_jobs_run": sum(len(v) for v in responses.values()),
        "n_iterations": report["n_iterations"],
        "n_labels": report["n_dft_labels"],
        "seconds": seconds,
        "calls": dict(_calls),
        "share": {k: v / wall for k, v in seconds.items()},
        "overhead_s": wall - work,
        "overhead_share": (wall - work) / wall,
        "orchestration_s": seconds["store I/O"] + seconds["other (jobflow, serialization, I/O)"],
        "orchestration_share": (seconds["store I/O"] + seconds["other (jobflow, serialization, I/O)"]) / wall,
        "store_size_bytes": store_bytes,
        "environment": env,
    }
    for k, v in seconds.items():
        print(f"{k:40s} {v:8.1f} s  {100 * v / wall:5.1f} %")
    print(f"outside labelling/training/MD: {wall - work:.1f} s of {wall:.1f} s ({100 * result['overhead_share']:.1f} %)"
          f"; jobflow/store/I/O alone: {100 * result['orchestration_share']:.1f} %")
    save("overhead", result, args.out)
    plot(result, args.out / "overhead.png")


if __name__ == "__main__":
    main()
