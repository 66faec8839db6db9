"""Does teacher MD in cells larger than the cutoff give the student its teacher's phonons? (issue 12, item 5)

Every frame the multi-phase run's student learned from is an 8-atom cell, whose periodic images lie inside the
6 Å cutoff and move with the atom: such frames only teach the force constants that Γ and X see, and the student's
diamond phonon bands miss L, W and K by 1-2 THz (band RMSE 0.67 THz against CP2K, its teacher 0.10). Teacher MD
in 64-atom diamond cells alone took the bands to 0.22 THz but cost accuracy on 8-atom MD frames
(``benchmarks/README.md``, "Why the phonons miss").

This runs the real ``DistillMaker`` flow of ``multi_phase.py`` (its teacher, task groups, strained + rattled
frames, the initial perturbed frames relabelled, the default student, seed) on the three Si phases, with one
task group added: NVT teacher MD of every phase in its 2x2x2 supercell (``TaskGroup.supercell``), so the student
sees both cell sizes. The teacher is a deepmd-kit model file (``teacher_from_labels.py`` rebuilds the
multi-phase run's from its exported DFT labels). The student is written to ``<workdir>/student.pth`` (or
``.pt``, as trained); test it (and the teacher) with ``held_out_phases.py --model`` and ``properties.py
--model``. This script adds the copy error on the flow's
held-out teacher frames, per cell size (8-atom / 64-atom): the student's error in large-cell MD, where no CP2K
frame exists.

Usage: ``.venv/bin/python benchmarks/supercell_student.py --teacher T.pt --workdir DIR [--workers 2]
[--n-steps 600] [--temperatures 300 900] [--no-supercell] [--default-task-groups] [--frames-only]``;
``--no-supercell`` is the control (teacher MD in the 8-atom input cells only, as ``multi_phase.py``'s
distillation had until 2026-12-06; the library's ``presets.distillation_task_groups`` have had the 64-atom group
since 2026-12-03). Writes ``results/supercell_student_TAG.json``.

The flow's teacher frames (every teacher-labelled frame and the split into the student's training and held-out
frames) are written to ``data/si_phases_teacher_frames_TAG.json.gz`` as soon as the split is done: run folders
do not outlive a session's machine, and the teacher MD takes about an hour on two cores, so students are
trained on them later from that file (``student_cell_sizes.py --frames``). ``--frames-only`` stops the flow
there (the student is not trained; the run folder stays resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from _common import distill_uuids, environment, save, si_phase
from multi_phase import PHASES, multi_phase_maker

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def distill_maker(supercell: tuple[int, int, int] | None, temperatures: list[float], n_steps: int,
                  traj_interval: int, default_task_groups: bool = False):
    """``multi_phase.py``'s DistillMaker (teacher on one thread) with the demo's teacher MD (with
    ``default_task_groups``: the library's, ``presets.distillation_task_groups``), and NVT teacher MD in
    ``supercell`` cells at ``temperatures`` (``n_steps`` of 2 fs, a frame every ``traj_interval``) added unless
    ``supercell`` is None."""
    from pfd_atomate.cli.demo import demo_maker
    from pfd_atomate.explore.schemas import TaskGroup
    from pfd_atomate.presets import dpa4_teacher

    maker = multi_phase_maker()
    # the demo's 8-atom teacher MD, which this script's results were measured on (multi_phase.py now takes the
    # library's default task groups, which have a large-cell group of their own)
    groups = None if default_task_groups else demo_maker().distill.task_groups
    distill = dataclasses.replace(maker.distill, teacher=dpa4_teacher(n_threads=1), task_groups=groups)
    if supercell is None:
        return distill
    group = TaskGroup(temperatures=temperatures, ensemble="nvt", n_steps=n_steps, time_step=2.0,
                      traj_interval=traj_interval, supercell=supercell)
    return dataclasses.replace(distill, task_groups=[*distill.teacher_task_groups(), group])


def copy_error_by_size(reference, predicted) -> dict[str, dict[str, float]]:
    """Student against teacher per frame size: ``{"<n> atoms": student_coverage.metrics(...)}`` (energy
    RMSE eV/atom, force RMSE eV/Å)."""
    from student_coverage import metrics

    sizes = sorted({f.n_atoms for f in reference.frames})
    subsets = {n: [i for i, f in enumerate(reference.frames) if f.n_atoms == n] for n in sizes}
    return {f"{n} atoms": metrics(reference.subset(idx), predicted.subset(idx)) for n, idx in subsets.items()}


class _FramesExported(Exception):
    """Raised from ``run_flow``'s progress callback to stop the flow once the teacher frames are written."""


def export_teacher_frames(store, path: Path, settings: dict) -> tuple[int, int]:
    """Write the teacher-labelled frames of a distillation in ``store`` and their split to ``path`` (the
    cached-dataset form of ``_dft_labels``, ``meta`` holding ``train_indices`` / ``test_indices``); the
    numbers of training and held-out frames.

    Raises
    ------
    LookupError: the store has not exactly one teacher label job and one split job.
    """
    from _dft_labels import write_cached_dataset

    from pfd_atomate.store import fetch_dataset, fetch_field

    uuids = distill_uuids(store, "teacher label", "split")
    frames = fetch_dataset(store, uuids[0])
    meta = {part: fetch_field(store, uuids[1], part) for part in ("train_indices", "test_indices")}
    write_cached_dataset(path, settings, meta, frames)
    print(f"wrote {path} ({len(frames)} teacher frames)", flush=True)
    return len(meta["train_indices"]), len(meta["test_indices"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's deepmd-kit model file (.pth / .pt)")
    parser.add_argument("--workdir", type=Path, required=True, help="the distillation's run folder (resumable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--supercell", type=int, nargs=3, default=[2, 2, 2])
    parser.add_argument("--no-supercell", action="store_true", help="the control: the run's own distillation")
    parser.add_argument("--default-task-groups", action="store_true",
                        help="the library's default teacher MD (it has a large-cell group) instead of the demo's; "
                             "with --no-supercell: DistillMaker's defaults throughout")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 900.0])
    parser.add_argument("--n-steps", type=int, default=600, help="2 fs steps per supercell MD task")
    parser.add_argument("--traj-interval", type=int, default=10)
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--frames-only", action="store_true",
                        help="stop once the teacher frames are written to data/ (no student)")
    args = parser.parse_args()
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.data import Dataset, ModelFile
    from pfd_atomate.workflows.local import open_run_store, run_flow
    from teacher_from_labels import training_frames

    supercell = None if args.no_supercell else tuple(args.supercell)
    maker = distill_maker(supercell, args.temperatures, args.n_steps, args.traj_interval, args.default_task_groups)
    teacher = ModelFile.from_path(args.teacher, backend="deepmd")
    structures = [AseAtomsAdaptor.get_structure(si_phase(p)) for p in PHASES]
    # the run's initial perturbed frames, relabelled by the teacher as PFDMaker hands them over (labels dropped)
    initial = training_frames(HERE / "data" / "si_phases_multi_phase_k300_w100_labels.json.gz", ["perturb"])
    initial = Dataset(frames=[f.without_labels().model_copy(update={"source": f.source.split(";")[0]})
                              for f in initial.frames], name="initial-perturbed")
    flow = maker.make(teacher, structures, extra_frames=[initial])
    frames_file = HERE / "data" / f"si_phases_teacher_frames{'_' + args.tag if args.tag else ''}.json.gz"
    frames_settings = {
        "teacher_sha256": teacher.sha256, "phases": list(PHASES),
        "task_groups": [g.model_dump(mode="json") for g in maker.teacher_task_groups()],
        "perturb": None if maker.perturb is None else repr(maker.perturb),
        "extra_frames": "the multi-phase run's initial perturbed frames (si_phases_multi_phase_k300_w100_labels)",
        "seed": maker.seed, "test_fraction": maker.test_fraction, "max_frames": maker.max_frames}

    def export_when_split(view) -> None:  # the teacher frames go to data/ the moment they exist
        if frames_file.exists() or not any(state == "COMPLETED" and meta.get("distill_step") == "split"
                                           for state, _, meta in view.states.values()):
            return
        export_teacher_frames(view.store, frames_file, frames_settings)
        if args.frames_only:
            raise _FramesExported

    start = time.perf_counter()
    try:
        result = run_flow(flow, args.workdir, workers=args.workers, on_progress=export_when_split)
    except _FramesExported:
        print(f"stopped after the teacher frames ({time.perf_counter() - start:.0f} s); the run folder "
              f"{args.workdir} is resumable without --frames-only", flush=True)
        return
    if not result.completed:
        raise SystemExit(f"the flow ended {result.state}: {result.failed}")
    from _common import distillation_sets
    from pfd_atomate.store import fetch_model

    with open_run_store(args.workdir) as (store, _, _):
        uuids = distill_uuids(store, "teacher label", "split", "train student")
        train_set, test_set = distillation_sets(store, uuids[0], uuids[1])
        student = fetch_model(store, uuids[2])
    student_path = args.workdir / f"student{Path(student.filename).suffix}"
    student_path.write_bytes(Path(student.materialize(args.workdir / "model")).read_bytes())
    predicted = maker.student.predict(student, test_set)
    summary = {
        "benchmark": "supercell_student", "environment": environment(1), "teacher": str(args.teacher),
        "teacher_sha256": teacher.sha256, "workdir": str(args.workdir), "student_path": str(student_path),
        "supercell_md": None if supercell is None else {"supercell": supercell, "temperatures": args.temperatures,
                                                       "n_steps": args.n_steps, "traj_interval": args.traj_interval},
        "wall_time_s": result.wall_time_s, "session_wall_s": time.perf_counter() - start,
        "train_frames": {f"{n} atoms": sum(f.n_atoms == n for f in train_set.frames)
                         for n in sorted({f.n_atoms for f in train_set.frames})},
        "student_vs_teacher_held_out": copy_error_by_size(test_set, predicted),
    }
    print(summary)
    save(f"supercell_student_{args.tag}" if args.tag else "supercell_student", summary, RESULTS)


if __name__ == "__main__":
    main()
