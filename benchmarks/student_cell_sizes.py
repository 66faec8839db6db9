"""Which teacher frames make a student that holds in large cells? (issue 12, item 5)

The default student (teacher MD in the 8-atom input cells only) has 1.3x its teacher's force RMSE on CP2K MD
frames in 8-atom cells, but 8x in 64-atom diamond cells (``held_out_phases.py --extra-set diamond-64=...``):
in a cell shorter than twice the cutoff every atom sees its own periodic images move with it, and MD frames of
uncorrelated neighbours are something it never saw. ``supercell_student.py``'s student (12 % of its teacher
frames from MD in 64-atom cells) was 3.7x there and 2.4x in 8-atom cells. This trains students from scratch on
that run's teacher frames (2770, the same held-out 308), the library's default student settings, and asks:

- ``by frames``: every frame drawn alike (what ``DistillMaker`` does; the 64-atom frames are 11 % of the draws
  but hold half the force labels); the run's own student (``student.pth`` in the run folder) when it is there;
- ``by atoms``: the 8-atom and the 64-atom frames as two datasets, weighted so that every atom's label is drawn
  alike (deepmd-kit's batch holds 4 frames of 8 atoms or 1 of 64: weights = frames ÷ frames per batch);
- ``64-atom MD + strained 8-atom``: no 8-atom MD frames, weighted by atoms as above;
- ``paper nets``: frames drawn alike, the PFD paper's se_e2_a nets ([25, 50, 100], axis 16 / [240, 240, 240]):
  capacity, at the same steps (1.3x the time per step on one CPU thread: 71 against 53 ms);
- ``batch 128 atoms``: frames drawn alike, batch ``auto:128`` (4x the atoms per step) for half the steps: twice the
  labels seen, less gradient noise, 1.2x the time (124 against 53 ms per step, one thread, two trainings at once).
- ``96000 more steps to 1e-4`` / ``to 1e-5``: training length; the run's own student trained on from its
  checkpoint (``--finetune``) for 96000 steps, its learning rate decaying 3.16e-4 → 1e-4 or 1e-4 → 1e-5, the
  second half of a 192000-step schedule ending at 1e-4 or 1e-5 (the 1e-4 one made the library's default
  ``STUDENT_STEPS = 192000``; the other variants keep the 96000 steps they were measured at, ``BASE_STEPS``);
- ``rattled 0.3 A``: the 295 perturbed 8-atom frames (strain 6 %, atoms moved 0.15 Å RMS) replaced by as many made
  with 0.3 Å and labelled by the teacher (``--teacher`` needed): the CP2K strained + rattled held-out frames with a
  pair below 1.9 Å are where every student was off by 1-6 eV/Å, and no teacher frame had a pair below 1.94 Å;
- ``rattled 0.15 + 0.3 A``: the run's perturbed frames kept and 102 such 0.3 Å frames (34 per phase) added;
- ``relative force loss`` / ``rattled 0.15 + 0.3 A, relative force loss``: deepmd-kit's ``loss.relative_f = 1``
  (eV/Å; each atom's force error divided by its label's norm plus 1 eV/Å), alone on the run's frames and with the
  0.3 Å frames added: does a loss where large forces cannot dominate keep the short-pair fix without its cost?
- ``energy weight 0.1`` / ``10`` / ``100``: deepmd-kit's energy and virial prefactors times 0.1, 10 or 100
  (``DeepMDBackend.energy_weight``, what fixed the teacher's phase energies): with the rate ending at 1e-4 the
  default loss ends weighting forces 100 times the energy, and every student above misses the teacher's energies by
  7-25 meV/atom on its held-out frames (E-V RMSE 7-53 meV/atom, BC8 17-40 meV/atom too close to diamond);
- ``se_atten_v2``: the PFD paper's student descriptor (attention layers off, compressible) with the default's nets
  and 96000 steps instead of se_e2_a;
- ``start lr 1e-2``: the paper's students' starting learning rate (1e-2 instead of 1e-3, decaying to the same 1e-4
  in the same 96000 steps): larger early steps in a fixed budget;
- ``rcut 6.5 A``: the paper's students' cutoff (6.5 Å instead of 6, 96000 steps); ``rcut 7 A``: further still;
- ``rcut_smth 4 A``: the switching function from 4 Å instead of 0.5 Å (rcut 6 Å): the 4th neighbour shell of
  diamond (5.43 Å) weighted 0.062 times the first instead of 0.005 (``teacher_locality.py``: the teacher owes its
  atoms more force beyond 5 Å than a student does);
- ``se_e2_a + se_e3``: the default's se_e2_a beside a three-body embedding (se_e3, 4 Å) as a deepmd-kit ``hybrid``
  descriptor (1.9x the time per step; not run to the end yet);
- ``rcut 7 A, rcut_smth 5 A``: a descriptor that resolves diamond's 4th / 5th shells (5.43 / 5.92 Å, weighted 0.40
  / 0.23 times the first): CP2K owes the atoms of 64-atom diamond 0.039 eV/Å from beyond 5 Å and no student above
  copies it; ``64-atom MD + strained 8-atom, rcut 7 A, rcut_smth 5 A``: the same on that variant's frames, where no
  far atom is an atom's own periodic image;
- ``192000 steps``: that default as it is meant, one 192000-step schedule from scratch (137 min on one thread,
  40-45 ms per step on these frames, alone or beside one other process).

Each is tested on the CP2K held-out sets (per phase: 8-atom MD and strained + rattled frames; 64-atom diamond MD)
and on the held-out teacher frames per cell size. Usage: ``.venv/bin/python benchmarks/student_cell_sizes.py
--run runs/supercell-student --workdir runs/cell-size-students [--variants ...] [--parallel 2]``; ``--run`` may
instead name the teacher frames a ``supercell_student.py`` flow exported to ``data/`` (every variant but the two
continuations, which need the run's own student); writes
``results/student_cell_sizes.json``; the students stay in ``--workdir`` (``properties.py --model`` for their
phonons and E–V curves).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import distill_uuids, distillation_sets, environment, save, set_threads
from student_coverage import metrics

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VARIANTS = ("by frames", "by atoms", "64-atom MD + strained 8-atom", "paper nets", "batch 128 atoms",
            "96000 more steps to 1e-4", "96000 more steps to 1e-5", "192000 steps", "rattled 0.3 A",
            "rattled 0.15 + 0.3 A", "relative force loss", "rattled 0.15 + 0.3 A, relative force loss",
            "energy weight 0.1", "energy weight 10", "energy weight 100", "se_atten_v2", "start lr 1e-2",
            "rcut 6.5 A", "rcut 7 A", "rcut_smth 4 A", "se_e2_a + se_e3", "rcut 7 A, rcut_smth 5 A",
            "64-atom MD + strained 8-atom, rcut 7 A, rcut_smth 5 A")
#: student settings of a variant beyond the library's default (DeepMDBackend fields; numb_steps as a factor)
SETTINGS = {"paper nets": {"input_overrides": {"model": {"descriptor": {"neuron": [25, 50, 100], "axis_neuron": 16},
                                                        "fitting_net": {"neuron": [240, 240, 240]}}}},
            "batch 128 atoms": {"batch_size": "auto:128", "steps_factor": 0.5},
            # the run's own student trained on (``--finetune`` of its checkpoint: weights kept, Adam's moments and
            # the step count start anew): the second half of a 192000-step schedule ending at 1e-4 (1e-3 decays to
            # 3.16e-4 by its step 96000) or at 1e-5 (1e-4 by step 96000)
            "96000 more steps to 1e-4": {"continue": True, "start_lr": 3.16e-4, "stop_lr": 1e-4},
            "96000 more steps to 1e-5": {"continue": True, "start_lr": 1e-4, "stop_lr": 1e-5},
            # the library's default since 2026-12-04 (presets.STUDENT_STEPS), from scratch in one schedule
            "192000 steps": {"steps_factor": 2.0},
            # deepmd-kit's loss.relative_f: each atom's force error divided by (|F_label| + 1 eV/Å), so the
            # 10-35 eV/Å forces of the 0.3 Å rattles weigh 1/11-1/36 of their error, an MD atom (median 1 eV/Å) 1/2
            "relative force loss": {"input_overrides": {"loss": {"relative_f": 1.0}}}}
# deepmd-kit's energy (and virial) prefactors times 0.1, 10 or 100 (``DeepMDBackend.energy_weight``): with the learning
# rate ending at 1e-4 the default's prefactors end at 0.9 (energy) against 101 (forces), and every student so far
# missed the teacher's energies by 7-25 meV/atom on held-out teacher frames (x100 fixed the teacher's fine-tune)
SETTINGS |= {f"energy weight {w}": {"energy_weight": float(w)} for w in (0.1, 10, 100)}
# the descriptor of the PFD paper's students (attention layers off: ``deepmd_templates``, compressible), the default's
# nets and schedule. With two attention layers (deepmd-kit's default attention sizes) a step took 13x as long (0.52
# against 0.040 s, one thread, 300 steps): 14 h for 96000 steps, and an MD step too slow for a student; not run
SETTINGS["se_atten_v2"] = {"template": "se_atten_v2"}
# the PFD paper's students start at a learning rate of 1e-2 (PFD supplementary methods, "Distillation"; 1e6 steps)
SETTINGS["start lr 1e-2"] = {"start_lr": 1e-2}
# and their cutoff: 6.5 Å instead of 6 (1.27x the neighbours): does the student miss the far part of a teacher whose
# message passing sees beyond its own cutoff?
SETTINGS["rcut 6.5 A"] = {"rcut": 6.5}
SETTINGS["rcut 7 A"] = {"rcut": 7.0}
# where the descriptor's switching function starts (0.5 Å: deepmd-kit's examples, the default). From 0.5 Å to 6 Å it
# weights diamond's 3rd / 4th / 5th neighbour shells (4.50 / 5.43 / 5.92 Å) 0.086 / 0.005 / 0.00002 times the first
# (2.35 Å), from 4 Å 0.47 / 0.062 / 0.0002: the student sees little beyond 4.5 Å, where the teacher owes its atoms
# more force than a student does (``teacher_locality.py``)
SETTINGS["rcut_smth 4 A"] = {"rcut_smth": 4.0}
# the default's se_e2_a beside a three-body embedding (se_e3) of the first two neighbour shells (3.84 Å in diamond; at
# most 22 neighbours within 4 Å in these frames): 1.9x the time per step (69 against 37 ms, one thread, beside a
# training)
SETTINGS["se_e2_a + se_e3"] = {"input_overrides": {"model": {"descriptor": {"type": "hybrid", "list": [
    {"type": "se_e2_a", "rcut": 6.0, "rcut_smth": 0.5, "sel": "auto", "neuron": [16, 32, 64], "axis_neuron": 12,
     "resnet_dt": False, "type_one_side": True},
    {"type": "se_e3", "rcut": 4.0, "rcut_smth": 0.5, "sel": "auto", "neuron": [4, 8, 16], "resnet_dt": False}]}}}}
SETTINGS["rattled 0.15 + 0.3 A, relative force loss"] = SETTINGS["relative force loss"]  # with RATTLED's frames
# a descriptor that resolves diamond's 4th / 5th shells (5.43 / 5.92 Å): switched from 5 Å to 7 Å they weigh 0.40 /
# 0.23 times the first shell, against 0.005 / 0.00002 (the default) and 0.062 / 0.0002 (rcut_smth 4 Å); CP2K owes
# the atoms of 64-atom diamond 0.039 eV/Å of force from beyond 5 Å, which no student above copies
# (``teacher_locality.py``). Alone, and on the large-cell frames, where no far atom is an atom's own image
SETTINGS["rcut 7 A, rcut_smth 5 A"] = {"rcut": 7.0, "rcut_smth": 5.0}
SETTINGS["64-atom MD + strained 8-atom, rcut 7 A, rcut_smth 5 A"] = SETTINGS["rcut 7 A, rcut_smth 5 A"]
#: variant → the variant whose training frames it takes (else all of them)
FRAMES = {"64-atom MD + strained 8-atom, rcut 7 A, rcut_smth 5 A": "64-atom MD + strained 8-atom"}
#: the distillation's perturbed 8-atom frames made again with atoms moved 0.3 Å (RMS length; the default 0.15),
#: labelled by the teacher (``--teacher``)
WIDE_RATTLE = {"cell_pert_fraction": 0.06, "atom_pert_distance": 0.3, "seed": 7}
#: variant → (WIDE_RATTLE frames per phase, keep the run's perturbed frames beside them)
RATTLED = {"rattled 0.3 A": (100, False), "rattled 0.15 + 0.3 A": (34, True),
           "rattled 0.15 + 0.3 A, relative force loss": (34, True)}
#: training steps of the student every variant is measured against (the library's default of 2026-12-03; since
#: 2026-12-04 the default trains 192000, after the two "more steps" variants)
BASE_STEPS = 96000
BATCH_ATOMS = 32  # deepmd-kit's batch_size "auto": frames per batch = ceil(32 / atoms per frame)


def teacher_frames(run_dir: Path):
    """``(train, test)`` teacher-labelled Datasets of a finished ``DistillMaker`` run folder, or of the file
    ``supercell_student.py`` exported them to (``data/si_phases_teacher_frames*.json.gz``)."""
    from pfd_atomate.workflows.local import attach_run

    if run_dir.is_file():
        from _dft_labels import read_cached_dataset

        _, frames, meta = read_cached_dataset(run_dir)
        return tuple(frames.subset(meta[f"{part}_indices"], name=f"teacher-{part}") for part in ("train", "test"))

    with attach_run(run_dir) as (store, _, _):
        return distillation_sets(store, *distill_uuids(store, "teacher label", "split"))


def own_checkpoint(run_dir: Path) -> Path:
    """The training checkpoint of the run's own student (``DistillMaker``'s ``train`` folder in the run).

    Raises
    ------
    FileNotFoundError: not exactly one student checkpoint in the run folder.
    """
    found = sorted(run_dir.glob("workers/*/*/train/model.ckpt-*.pt"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one student checkpoint under {run_dir}/workers, found {found}")
    return found[0]


def training_sets(train, variant: str) -> tuple[list, list[float] | None]:
    """The datasets and per-dataset sampling weights of ``variant`` (None: one dataset, frames drawn alike).

    Raises
    ------
    ValueError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    variant = FRAMES.get(variant, variant)
    if variant in ("by frames", *RATTLED, *SETTINGS):
        return [train], None
    keep = (lambda f: True) if variant == "by atoms" else (
        lambda f: f.n_atoms > 8 or f.source.startswith("perturb"))
    sizes = sorted({f.n_atoms for f in train.frames})
    sets = [train.subset([i for i, f in enumerate(train.frames) if f.n_atoms == n and keep(f)], name=f"{n} atoms")
            for n in sizes]
    sets = [s for s in sets if len(s)]
    # each atom label drawn alike: a dataset's weight is the number of batches its frames fill
    weights = [len(s) / math.ceil(BATCH_ATOMS / s.frames[0].n_atoms) for s in sets]
    return sets, weights


def wide_rattle_frames(train, teacher_file: Path, n_frames: int, keep: bool):
    """``train`` with its perturbed frames (source ``perturb...``) replaced by :data:`WIDE_RATTLE` frames of the three
    8-atom Si phase cells, labelled by the teacher model in ``teacher_file`` (energy eV, forces eV/Å, virial eV);
    ``n_frames`` per phase; ``keep``: add them to the perturbed frames instead.

    Raises
    ------
    ValueError: no teacher model file given.
    """
    from _common import si_phase
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate import ModelFile
    from pfd_atomate.data import Dataset
    from pfd_atomate.perturb.core import perturb_structures
    from pfd_atomate.presets import dpa4_teacher
    from pfd_atomate.select.filters import FrameFilter

    if teacher_file is None:
        raise ValueError(f"variants {list(RATTLED)} need --teacher (the model that labels the new frames)")
    structures = [AseAtomsAdaptor.get_structure(si_phase(p)) for p in ("diamond", "beta-Sn", "bc8")]
    frames = perturb_structures(structures, n_frames=n_frames, **WIDE_RATTLE)
    frames, rejected = FrameFilter().apply(frames)  # as DistillMaker's select job does
    labelled = dpa4_teacher(n_threads=1).predict(ModelFile.from_path(teacher_file, backend="deepmd"), frames)
    kept = train.subset([i for i, f in enumerate(train.frames) if keep or not f.source.startswith("perturb")])
    print(f"rattled 0.3 A (keep={keep}): {len(kept)} teacher frames kept, {len(labelled)} new perturbed frames "
          f"(filter dropped {sum(rejected.values())})", flush=True)
    return Dataset.concat([kept, labelled], name="teacher-train-rattled-0.3")


def held_out_cp2k() -> dict:
    """``{"<phase> <kind>": Dataset}``: the CP2K held-out sets of ``held_out_phases.py`` on the multi-phase run's
    meshes, and the 64-atom MD frames of ``held_out_md.py --supercell 2 2 2`` (diamond; β-Sn and BC8 where
    labelled)."""
    from held_out_phases import held_out_sets

    from _dft_labels import DATA, read_cached_dataset

    sets = held_out_sets(argparse.Namespace(kpoint_density=300.0, procs=1, rattled=8, temperatures=[300.0, 900.0],
                                            per_temperature=4, seed=4242))
    flat = {f"{phase} {kind}": data for phase, kinds in sets.items() for kind, data in kinds.items()}
    flat["diamond 64-atom md"] = read_cached_dataset(DATA / "si64_md_cp2k_k222_300-900K_n2_s2027.json.gz")[1]
    for phase in ("beta-Sn", "bc8"):  # labelled on 3x3x3 (about 32 min per frame, one thread): there once labelled
        if (path := DATA / f"si64_{phase}_md_cp2k_k333_300-900K_n2_s2027.json.gz").exists():
            flat[f"{phase} 64-atom md"] = read_cached_dataset(path)[1]
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a finished supercell_student.py run folder, or the teacher frames it exported to data/")
    parser.add_argument("--workdir", type=Path, required=True, help="the students are kept here")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once, one thread each")
    parser.add_argument("--teacher", type=Path, default=None, help="the run's teacher model file (for its RMSEs)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default: {BASE_STEPS})")
    parser.add_argument("--save-freq", type=int, default=None,
                        help="steps between checkpoints (default: one at the end); the same command run again "
                             "in the same --workdir continues an interrupted training from its last checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="threads per training (one training at a time: 2)")
    parser.add_argument("--seed", type=int, default=1,
                        help="the students' seed (network initialisation and batches; the default student's is 1)")
    parser.add_argument("--tag", default="", help="suffix of the result file name (student_cell_sizes_<tag>.json)")
    args = parser.parse_args()
    set_threads(args.threads)
    from pfd_atomate import ModelFile
    from pfd_atomate.data import Dataset
    from pfd_atomate.presets import dpa4_teacher, se_e2_a_student

    train, test = teacher_frames(args.run)
    student = se_e2_a_student(n_threads=args.threads, numb_steps=args.steps or BASE_STEPS, seed=args.seed,
                              save_freq=args.save_freq)

    def fit(variant: str):
        folder = args.workdir / (variant.replace(",", "").replace(" ", "_").replace("+", "plus")
                                 + ("" if args.seed == 1 else f"_seed{args.seed}"))
        done, log = folder / "student.json", folder / "training.json"
        if done.exists():  # trained by an earlier invocation: keep it (and its wall time where it was kept)
            kept = json.loads(log.read_text()) if log.exists() else {"wall_s": 0.0, "datasets": None}
            return variant, ModelFile.model_validate_json(done.read_text()), kept["wall_s"], kept["datasets"]
        own = sorted(args.run.glob("student.p*")) if args.run.is_dir() else []
        if variant == "by frames" and own:  # the run's own student: DistillMaker trained it on these very frames
            return variant, ModelFile.from_path(own[0], backend="deepmd"), 0.0, {"the run's student": own[0].name}
        sets, weights = training_sets(train, variant)
        if variant in RATTLED:
            sets = [wide_rattle_frames(train, args.teacher, *RATTLED[variant])]
        settings = dict(SETTINGS.get(variant, {}))
        factor = settings.pop("steps_factor", 1.0)
        if settings.pop("continue", False):  # needs the run folder: the run's own student's checkpoint
            settings["base_model"] = str(own_checkpoint(args.run).resolve())
        trainer = se_e2_a_student(n_threads=args.threads, numb_steps=round(student.numb_steps * factor),
                                  seed=args.seed, save_freq=args.save_freq, **settings)
        start = time.perf_counter()
        model = trainer.train(sets, folder / "work", weights=weights)
        seconds, data = time.perf_counter() - start, {s.name: len(s) for s in sets} | {"weights": weights}
        folder.mkdir(parents=True, exist_ok=True)
        done.write_text(model.model_dump_json())
        log.write_text(json.dumps({"wall_s": seconds, "datasets": data}))
        return variant, model, seconds, data

    with ThreadPoolExecutor(args.parallel) as pool:
        trained = list(pool.map(fit, args.variants))
    cp2k = held_out_cp2k()
    by_size = {f"teacher frames, {n} atoms": test.subset([i for i, f in enumerate(test.frames) if f.n_atoms == n])
               for n in sorted({f.n_atoms for f in test.frames})}
    result = {"benchmark": "student_cell_sizes", "environment": environment(1), "run": str(args.run),
              "student": {"numb_steps": student.training_steps(len(train)), "template": student.template,
                          "seed": args.seed},
              "train_frames": {f"{n} atoms": sum(f.n_atoms == n for f in train.frames)
                               for n in sorted({f.n_atoms for f in train.frames})},
              "sets": {k: len(v) for k, v in (cp2k | by_size).items()}, "teacher": {}, "variants": {}}
    md8 = Dataset.concat([d for k, d in cp2k.items() if k.endswith(" md") and "64" not in k], name="8-atom md")
    if args.teacher is not None:
        teacher = dpa4_teacher(n_threads=1)
        teacher_model = ModelFile.from_path(args.teacher, backend="deepmd")
        result["teacher"] = {k: metrics(d, teacher.predict(teacher_model, d))
                             for k, d in (cp2k | {"8-atom md, all phases": md8}).items()}
    for variant, model, seconds, data in trained:
        row = {"train_wall_s": round(seconds, 1), "datasets": data, "path": model.filename,
               "settings": SETTINGS.get(variant, {})}
        for name, ref in (cp2k | by_size).items():
            row[name] = metrics(ref, student.predict(model, ref))
            if name in result["teacher"]:
                row[name]["ratio_to_teacher"] = row[name]["force_rmse"] / result["teacher"][name]["force_rmse"]
        row["8-atom md, all phases"] = metrics(md8, student.predict(model, md8))
        if "8-atom md, all phases" in result["teacher"]:
            row["8-atom md, all phases"]["ratio_to_teacher"] = (
                row["8-atom md, all phases"]["force_rmse"] / result["teacher"]["8-atom md, all phases"]["force_rmse"])
        result["variants"][variant] = row
        print(variant, {k: round(v["force_rmse"], 4) for k, v in row.items()
                        if isinstance(v, dict) and "force_rmse" in v}, flush=True)
    save("student_cell_sizes" + (f"_{args.tag.lstrip('_')}" if args.tag else ""), result, RESULTS)


if __name__ == "__main__":
    main()
