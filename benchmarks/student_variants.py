"""What closes the gap between the distilled student and its teacher? Student variants on one demo run's
teacher frames, each tested on independent CP2K sets (issue 12, item 5).

The demo's se_e2_a student (rcut 5 Å, embedding net [8, 16, 32], fitting net [32, 32, 32], 12000 steps) has
1.4-1.6x its teacher's force RMSE on independent CP2K MD frames of diamond Si8, depending on the seed
(``results/student_variants.json``; PFD paper: 1.4x for Si).
Every variant here is trained from scratch on the **same** teacher-labelled frames of a finished demo run
(its distillation training set, never its held-out teacher frames), with one setting changed against the
demo's student (the run's own student, trained with the same seed, is the baseline), and tested on:

- ``held_out_md``: 30 CP2K-labelled MD frames of Si8 at 300 / 900 / 1500 K (``held_out_md.py``'s cached set;
  made apart from any PFD run);
- ``held_out_rattled``: the 39 strained + rattled CP2K frames of ``data/si8_cp2k_k333_n200_s11`` (harsher
  than MD: force RMS 3.8 eV/Å);
- ``teacher_md``: the run's held-out teacher-labelled MD frames (how well the student copies its teacher).

The teacher is tested on the same CP2K sets; ``ratio`` is student force RMSE / teacher force RMSE. Speed: each
compressed student's energy + forces + virial call on 512-atom diamond Si, one thread, best of 3, measured one
model after another once every training has ended (side by side in one run).

``--system sic`` does the same on a ``sic.py --pfd`` run of 3C-SiC8 with ``sic.py``'s held-out sets (12 MD
frames at 300-1500 K, 12 strained + rattled cells), force RMSE per element too, and writes
``student_variants_sic.json``. Variants of earlier invocations on the same run are kept in the JSON;
invocations run side by side write to different ``--out`` folders and are combined with ``--merge``.

Usage: ``python benchmarks/student_variants.py --run RUN_DIR [--system sic] [--variants NAME ...] [--parallel 2]``
(each training is single-threaded; ``--parallel`` trainings run at once). ``--quick``: 600 steps each.
Writes ``<out>/student_variants.json`` and ``.png``.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from maggma.utils import recursive_update
from _common import environment, parse_args, pyplot, run_distillation, save, save_figure
from held_out_md import md_held_out
from sic import element_force_rmse
from student_coverage import metrics

from pfd_atomate.cli.demo import diamond_si, held_out_dft_frames
from pfd_atomate.data import Dataset, Frame
from pfd_atomate.presets import dpa4_teacher, se_e2_a_student

#: the se_e2_a template's nets, the library default's until 2026-12-03 (presets.STUDENT_NETS since, measured here)
TEMPLATE_NETS: dict[str, Any] = {"input_overrides": {"model": {"descriptor": {"neuron": [8, 16, 32], "axis_neuron": 8},
                                                               "fitting_net": {"neuron": [32, 32, 32]}}}}
#: the demo's student as the runs of 2026-12-02 trained it (pfd_atomate.cli.demo.demo_maker): se_e2_a, rcut 5 Å,
#: 12000 steps, learning rate 1e-3 -> 1e-5 (the preset's final rate has been 1e-4 since, measured here)
DEMO_STUDENT: dict[str, Any] = {"template": "se_e2_a", "rcut": 5.0, "numb_steps": 12000, "stop_lr": 1e-5} | TEMPLATE_NETS
#: the library's default student when the multi-phase run of 2026-12-02 trained it: 48000 steps to 1e-4, rcut 6 Å
RUN_STUDENT_SI_PHASES: dict[str, Any] = {"numb_steps": 48000} | TEMPLATE_NETS

#: one setting changed against DEMO_STUDENT per variant (DeepMDBackend fields); "demo" is the run's own student
VARIANTS: dict[str, dict[str, Any]] = {
    "rcut 6 Å": {"rcut": 6.0},
    "se_atten_v2": {"template": "se_atten_v2"},
    "24000 steps": {"numb_steps": 24000},
    "wider nets": {"input_overrides": {"model": {"descriptor": {"neuron": [16, 32, 64], "axis_neuron": 12},
                                                 "fitting_net": {"neuron": [96, 96, 96]}}}},
    "force-weighted loss": {"input_overrides": {"loss": {"limit_pref_f": 10.0}}},  # the gap is in the forces
}
VARIANTS["wider nets, 24000 steps"] = VARIANTS["wider nets"] | VARIANTS["24000 steps"]
VARIANTS["seed 2"] = {"seed": 2}  # the demo's student again: how far another seed moves the figures
#: the size of DeePMD's published se_e2_a examples (and of the PFD paper's students)
VARIANTS["paper-size nets"] = {"input_overrides": {"model": {"descriptor": {"neuron": [25, 50, 100], "axis_neuron": 16},
                                                             "fitting_net": {"neuron": [240, 240, 240]}}}}
VARIANTS["paper-size nets, seed 2"] = VARIANTS["paper-size nets"] | VARIANTS["seed 2"]
VARIANTS["seed 3"] = {"seed": 3}
VARIANTS["wider nets, 24000 steps, seed 2"] = VARIANTS["wider nets, 24000 steps"] | VARIANTS["seed 2"]
# the final learning rate of the exponential decay (the demo's: 1e-5), and longer trainings
VARIANTS["stop_lr 1e-7"] = {"stop_lr": 1e-7}
VARIANTS["stop_lr 1e-4"] = {"stop_lr": 1e-4}
VARIANTS["stop_lr 1e-4, seed 2"] = VARIANTS["stop_lr 1e-4"] | VARIANTS["seed 2"]
VARIANTS["24000 steps, stop_lr 1e-7"] = VARIANTS["24000 steps"] | VARIANTS["stop_lr 1e-7"]
VARIANTS["48000 steps"] = {"numb_steps": 48000}
VARIANTS["48000 steps, stop_lr 1e-4"] = VARIANTS["48000 steps"] | VARIANTS["stop_lr 1e-4"]  # the preset's since
VARIANTS["96000 steps"] = {"numb_steps": 96000}
VARIANTS["wider nets, 48000 steps"] = VARIANTS["wider nets"] | VARIANTS["48000 steps"]
VARIANTS["wider nets, 48000 steps, stop_lr 1e-4"] = VARIANTS["wider nets, 48000 steps"] | VARIANTS["stop_lr 1e-4"]
VARIANTS["96000 steps, stop_lr 1e-4"] = VARIANTS["96000 steps"] | VARIANTS["stop_lr 1e-4"]
# the loss weights follow the learning rate (pref = limit + (start - limit) * lr / start_lr): ending at 1e-4
# leaves the force weight at 101 (energy 0.90), ending at 1e-5 at 11 (0.99). This keeps 1e-5 and ends at a
# force weight of 109: is the gain of stop_lr 1e-4 the force weight or the learning rate?
VARIANTS["48000 steps, limit_pref_f 100"] = VARIANTS["48000 steps"] | {"input_overrides": {"loss": {"limit_pref_f": 100.0}}}
# two elements: an embedding per (centre, neighbour) type pair instead of per neighbour type
VARIANTS["type pairs"] = {"input_overrides": {"model": {"descriptor": {"type_one_side": False}}}}
# more teacher frames: strained + rattled copies of the run's input structures, labelled by the teacher
# (DistillMaker.perturb). MD at 300-900 K rarely brings two atoms closer than about 2.1 Å (Si) nor strains the
# cell by 6 %; a student that never saw such frames extrapolates there (E-V curves, rattled frames, vacancies)
VARIANTS["+ teacher-labelled strained + rattled frames"] = {"teacher_perturb": {
    "n_frames": 100, "cell_pert_fraction": 0.06, "atom_pert_distance": 0.15, "seed": 7}}
VARIANTS["+ 3x teacher-labelled strained + rattled frames"] = {"teacher_perturb": {
    "n_frames": 300, "cell_pert_fraction": 0.06, "atom_pert_distance": 0.15, "seed": 7}}
# the fine-tuning data's perturbation (the demo's PerturbMaker: 3 % strain, 0.1 Å), 100 frames per structure
VARIANTS["+ mildly strained + rattled teacher frames"] = {"teacher_perturb": {
    "n_frames": 100, "cell_pert_fraction": 0.03, "atom_pert_distance": 0.1, "seed": 7}}
VARIANTS["wider nets, + mildly strained + rattled teacher frames"] = (
    VARIANTS["wider nets"] | VARIANTS["+ mildly strained + rattled teacher frames"])
# si-phases: the wider nets' copy error (0.042 eV/Å from the teacher) is still 4x the teacher's own error on the
# MD frames; is the student short of capacity (paper-size nets) or of training (twice the steps)?
VARIANTS["wider nets, 96000 steps"] = VARIANTS["wider nets"] | VARIANTS["96000 steps"]
VARIANTS["wider nets, 96000 steps, seed 2"] = VARIANTS["wider nets, 96000 steps"] | VARIANTS["seed 2"]
# phonons are finite differences of 0.01 Å displacements near equilibrium, where the teacher's MD at 300-900 K
# gives few frames: teacher-labelled cells strained by at most 2 % and rattled by 0.03 Å
VARIANTS["wider nets, 96000 steps, + near-equilibrium teacher frames"] = VARIANTS["wider nets, 96000 steps"] | {
    "teacher_perturb": {"n_frames": 100, "cell_pert_fraction": 0.02, "atom_pert_distance": 0.03, "seed": 7}}
# the teacher's MD keeps each phase near one volume (diamond: 20.0-21.0 Å^3/atom) and its nearest neighbours
# beyond 2.1 Å: the wider-nets students miss the E-V curves by 35-85 meV/atom and the rattled frames by 1.2-1.8 eV/Å.
# With the template's nets these frames fixed both and cost MD accuracy (4.7x): do wider nets have room for both?
# (variants with extra frames before 2026-12-03 09:00 drew half of each batch from them: see train())
VARIANTS["wider nets, 96000 steps, + teacher-labelled strained + rattled frames"] = (
    VARIANTS["wider nets, 96000 steps"] | VARIANTS["+ teacher-labelled strained + rattled frames"])
# the students' diamond phonons match CP2K at Γ and X and miss by 1-2 THz at L, W and K: the q-points an 8-atom
# cubic cell can hold (its periodic images, 5.43 Å away, inside rcut 6 Å, move with each atom in every training frame).
# Teacher MD in 64-atom cells (no atom sees its own image) adds the displacement patterns of L and W.
VARIANTS["wider nets, 96000 steps, + teacher MD in 64-atom diamond cells"] = VARIANTS["wider nets, 96000 steps"] | {
    "teacher_md": {"phases": ["diamond"], "supercell": [2, 2, 2], "temperatures": [300.0, 900.0], "n_steps": 600,
                   "interval": 6, "seed": 11}}


def seconds_per_call(backend, model, n_calls: int = 3, cell=None) -> float:
    """Best wall time (s) of one energy + forces + virial call of ``model`` on the 4x4x4 supercell of ``cell``
    (default: 8-atom diamond Si, so 512 atoms), one thread.

    Every call gets a differently rattled cell: an ASE calculator returns its stored results, without computing,
    for the positions it saw last.
    """
    cell = (cell or diamond_si()).make_supercell([4, 4, 4], in_place=False)
    frames = []
    for seed in range(n_calls + 1):
        rattled = cell.copy().perturb(0.05, seed=seed)
        frames.append(Dataset(frames=[Frame.from_structure(rattled)]))
    backend.predict(model, frames[0])  # loads the model
    calls = []
    for frame in frames[1:]:
        start = time.perf_counter()
        backend.predict(model, frame)
        calls.append(time.perf_counter() - start)
    return min(calls)


def plot(result: dict[str, Any], path: Path) -> None:
    """Force RMSE of every variant on the three sets (bars), the teacher's as a dashed line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    names = list(result["variants"])
    for ax, key, title in ((axes[0], "held_out_md", f"{result['sets']['held_out_md']} CP2K MD frames"),
                           (axes[1], "held_out_rattled", f"{result['sets']['held_out_rattled']} CP2K rattled frames"),
                           (axes[2], "teacher_md", f"{result['sets']['teacher_md']} held-out teacher MD frames")):
        ax.bar(range(len(names)), [result["variants"][n][key]["force_rmse"] for n in names], color="tab:blue")
        if key in result["teacher"]:
            ax.axhline(result["teacher"][key]["force_rmse"], color="k", ls="--", label="teacher")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("student force RMSE (eV/Å)")
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def main() -> None:
    def options(parser):
        parser.add_argument("--run", type=Path, required=True, help="a finished full demo run folder")
        parser.add_argument("--variants", nargs="+", default=["demo", *VARIANTS], choices=["demo", *VARIANTS])
        parser.add_argument("--parallel", type=int, default=2, help="trainings at once (one thread each)")
        parser.add_argument("--workdir", type=Path, default=None, help="keep the trained students here")
        parser.add_argument("--system", choices=["si", "sic", "si-phases"], default="si",
                            help="si: a demo run on diamond Si8; sic: a `sic.py --pfd` run on 3C-SiC8 (its held-out "
                                 "sets, per-element force RMSE); si-phases: a `multi_phase.py` run (diamond, β-Sn, "
                                 "BC8; held-out sets and E-V curves per phase; variants change the library's default "
                                 "student of that run's time, RUN_STUDENT_SI_PHASES, instead of the demo's)")
        parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                            help="train nothing: add the variants of these result files (other invocations on the "
                                 "same run, e.g. with another --out) to this --out's file; a variant in both keeps this one's")

    args = parse_args(__doc__.splitlines()[0], options)
    name = "student_variants" + ("" if args.system == "si" else "_" + args.system.replace("-", "_"))
    base = RUN_STUDENT_SI_PHASES if args.system == "si-phases" else DEMO_STUDENT  # what the run's student had
    if args.merge:  # no training: fold other invocations' results into this one's
        result = json.loads((args.out / f"{name}.json").read_text())
        for path in args.merge:
            result = with_variants_of(result, path)
        save(name, result, args.out)
        plot(result, args.out / f"{name}.png")
        return
    teacher_model, demo_student, train_set, teacher_md = run_distillation(args.run)
    sets, cell, system = held_out(args.system)
    teacher = dpa4_teacher(n_threads=1)
    curves = eos_frames() if args.system == "si-phases" else None
    result: dict[str, Any] = {
        "system": f"{system}; teacher = the run's fine-tuned DPA-4; students trained from scratch on the run's "
                  f"{len(train_set)} teacher-labelled distillation frames",
        "run": str(args.run.resolve()), "demo_student": base,
        "sets": {name: len(data) for name, data in sets.items()} | {"teacher_md": len(teacher_md)},
        "teacher": {}, "variants": {}, "environment": environment(1),
    }
    for set_name, data in sets.items():
        result["teacher"][set_name] = set_metrics(data, teacher.predict(teacher_model, data))
    if curves:
        result["teacher"]["eos_rmse_mev_per_atom"] = eos_rmse(teacher, teacher_model, curves)

    def train(name: str) -> tuple[str, Any, float]:
        settings = copy.deepcopy(base)  # nested settings (input_overrides) merge, as in se_e2_a_student
        recursive_update(settings, copy.deepcopy(VARIANTS.get(name, {}) | ({"numb_steps": 600} if args.quick else {})))
        perturb = settings.pop("teacher_perturb", None)
        md = settings.pop("teacher_md", None)
        backend = se_e2_a_student(**settings, n_threads=1)
        if name == "demo":  # the run's own student (compressed already)
            return name, (backend, demo_student, demo_student, settings, 0), 0.0
        start = time.perf_counter()
        extra = [teacher_perturbed(teacher, teacher_model, args.system, perturb)] if perturb else []
        extra += [teacher_md_frames(teacher, teacher_model, args.system, md)] if md else []
        folder = workdir / name.replace(" ", "_").replace("+", "plus")
        # one dataset, sampled by frame count, as DistillMaker trains on everything its teacher labelled (passed as
        # separate datasets, each would get an equal share of the batches, whatever its size)
        model = backend.train([Dataset.concat([train_set, *extra], name=train_set.name)] if extra else [train_set],
                              folder)
        wall = time.perf_counter() - start
        n_extra = sum(len(d) for d in extra)
        used = settings | ({"teacher_perturb": perturb} if perturb else {}) | ({"teacher_md": md} if md else {})
        return name, (backend, model, backend.compress_model(model, folder), used, n_extra), wall

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        workdir = args.workdir or Path(tmp)
        trained = {name: rest for name, *rest in pool.map(train, args.variants)}
    # speed after all trainings, one model at a time: side by side on a quiet machine
    for variant, ((backend, model, compressed, settings, n_extra), wall) in trained.items():
        row = {"settings": settings, "train_wall_s": round(wall, 1), "n_train_frames": len(train_set) + n_extra,
               "teacher_md": metrics(teacher_md, backend.predict(model, teacher_md))}
        if curves:
            row["eos_rmse_mev_per_atom"] = eos_rmse(backend, compressed, curves)
        for set_name, data in sets.items():
            row[set_name] = set_metrics(data, backend.predict(model, data))
            row[set_name]["ratio"] = row[set_name]["force_rmse"] / result["teacher"][set_name]["force_rmse"]
        row["compressed_s_per_call_512_atoms"] = seconds_per_call(backend, compressed, cell=cell)
        result["variants"][variant] = row
        print(variant, {k: round(row[k]["force_rmse"], 4) for k in ("held_out_md", "held_out_rattled", "teacher_md")},
              f"train {wall:.0f} s, {1000 * row['compressed_s_per_call_512_atoms']:.0f} ms per 512-atom call",
              {k: round(v, 1) for k, v in row.get("eos_rmse_mev_per_atom", {}).items()}, flush=True)
    # variants of earlier invocations on the same run stay, unless trained again here (read now, not at the
    # start: another invocation may have saved in between)
    save(name, with_variants_of(result, args.out / f"{name}.json"), args.out)
    plot(result, args.out / f"{name}.png")


def set_metrics(reference: Dataset, predicted: Dataset) -> dict[str, Any]:
    """``student_coverage.metrics`` (energy RMSE eV/atom, force RMSE eV/Å) plus the force RMSE per element."""
    return metrics(reference, predicted) | {"force_rmse_per_element": element_force_rmse(reference, predicted)}


def _same_run(a: str, b: str) -> bool:
    """Whether two recorded run folders are one; a relative one may have been given from the repository root
    or from ``benchmarks/`` (earlier invocations recorded it as given)."""
    def places(p: str) -> set[Path]:
        path = Path(p)
        return {path} if path.is_absolute() else {path.resolve(), (Path(__file__).resolve().parent / path).resolve()}

    return bool(places(a) & places(b))


def with_variants_of(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """``result`` plus the variants of the JSON at ``path`` (another invocation on the same run) that it has
    not trained itself; that invocation's environment is listed in ``environment_earlier``."""
    if not path.exists():
        return result
    earlier = json.loads(path.read_text())
    if not _same_run(earlier.get("run", ""), result["run"]):
        print(f"{path}: results of another run ({earlier.get('run')}), not merged", flush=True)
        return result
    result["variants"] = {k: v for k, v in earlier["variants"].items() if k not in result["variants"]} | result["variants"]
    result["environment_earlier"] = (result.get("environment_earlier", []) + earlier.get("environment_earlier", [])
                                     + [earlier["environment"]])
    return result


def held_out(system: str) -> tuple[dict[str, Dataset], Any, str]:
    """The independent CP2K sets of ``system`` ("si", "sic" or "si-phases"): ({"held_out_md", "held_out_rattled"}
    -> Dataset, the 8-atom cell as a Structure, a description)."""
    if system == "sic":
        from sic import held_out_sets, sic_held_out, sic_structure

        groups = held_out_sets(sic_held_out(12, [300.0, 900.0, 1500.0], 4, 5151)[0])
        return ({"held_out_md": groups["md"], "held_out_rattled": groups["rattled"]}, sic_structure(),
                "3C-SiC8 (sic.py's held-out sets: 12 MD frames at 300-1500 K, 12 strained + rattled)")
    if system == "si-phases":
        import argparse

        from held_out_phases import held_out_sets

        sets = held_out_sets(argparse.Namespace(kpoint_density=KPOINT_DENSITY, procs=1, rattled=8,
                                                temperatures=[300.0, 900.0], per_temperature=4, seed=4242))
        out = {f"held_out_{kind}": Dataset.concat([kinds[kind] for kinds in sets.values()], name=f"phases-{kind}")
               for kind in ("md", "rattled")}
        out |= {f"{phase}_{kind}": data for phase, kinds in sets.items() for kind, data in kinds.items()}
        return (out, diamond_si(), "Si diamond + β-Sn + BC8 8-atom cells (held_out_phases.py's sets on the "
                f"meshes of kpoint_density {KPOINT_DENSITY:g}: MD frames at 300-1500 K, strained + rattled cells)")
    return ({"held_out_md": md_held_out([300.0, 900.0, 1500.0], 10, 2026)[0], "held_out_rattled": held_out_dft_frames()},
            diamond_si(), "diamond Si8")


#: the CP2K mesh density of multi_phase.py's labeller, and so of the si-phases held-out sets and E-V curves
KPOINT_DENSITY = 300.0


def input_structures(system: str) -> list:
    """The input structures of the runs of ``system`` (what the teacher's perturbed frames start from)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    if system == "sic":
        from sic import sic_structure

        return [sic_structure()]
    if system == "si-phases":
        from _common import si_phase

        return [AseAtomsAdaptor.get_structure(si_phase(p)) for p in ("diamond", "beta-Sn", "bc8")]
    return [diamond_si()]


def teacher_perturbed(teacher, teacher_model, system: str, settings: dict) -> Dataset:
    """Strained + rattled copies of the input structures (``perturb_structures`` with ``settings``), passed
    through the pre-label filter and labelled by the teacher (what ``DistillMaker.perturb`` adds)."""
    from pfd_atomate.perturb.core import perturb_structures
    from pfd_atomate.select.filters import FrameFilter

    frames, _ = FrameFilter().apply(perturb_structures(input_structures(system), **settings))
    return teacher.predict(teacher_model, frames)


def teacher_md_frames(teacher, teacher_model, system: str, settings: dict) -> Dataset:
    """Frames of Langevin MD (2 fs, friction 0.01/fs) driven by the teacher in supercells of Si phases, labelled
    by the teacher: ``settings`` = {"phases": [...], "supercell": [n1, n2, n3], "temperatures": [K, ...],
    "n_steps": steps per temperature, "interval": steps between frames (the first 10 intervals are dropped as
    equilibration), "seed"}. The frames are as big as the supercell (diamond 2x2x2: 64 atoms).

    Raises
    ------
    ValueError: ``system`` is not "si-phases" (only the Si phases have supercells here).
    """
    if system != "si-phases":
        raise ValueError(f"teacher_md needs --system si-phases, got {system!r}")
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from _common import si_phase

    frames = []
    for phase in settings["phases"]:
        for i, temperature in enumerate(settings["temperatures"]):
            atoms = si_phase(phase).repeat(tuple(settings["supercell"]))
            rng = np.random.default_rng(settings["seed"] + i)
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
            atoms.calc = teacher.calculator(teacher_model)
            dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, rng=rng)
            for step in range(settings["interval"], settings["n_steps"] + 1, settings["interval"]):
                dyn.run(settings["interval"])
                if step > 10 * settings["interval"]:
                    frames.append(Frame.from_atoms(atoms, source=f"teacher-md:{phase}:{temperature:g}K",
                                                   with_labels=False))
    return teacher.predict(teacher_model, Dataset(frames=frames, name="teacher-md-supercells"))


def eos_frames() -> dict[str, tuple[Dataset, Any]]:
    """CP2K's E-V points of the three Si phases on the kpoint_density meshes (``cp2k_reference.py --phases``):
    phase -> (the cells, isotropically scaled with fixed fractional positions, unlabelled; CP2K eV/atom)."""
    from _common import si_phase
    from cp2k_reference import load_phases

    doc = load_phases(KPOINT_DENSITY)
    out = {}
    for phase, data in doc["phases"].items():
        atoms = si_phase(phase)
        n = len(atoms)
        frames = []
        for volume in data["volumes"]:
            scaled = atoms.copy()
            scaled.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
            frames.append(Frame.from_atoms(scaled, source=f"eos:{phase}", with_labels=False))
        out[phase] = (Dataset(frames=frames, name=f"eos-{phase}"), np.array(data["energies"]) / n)
    return out


def eos_rmse(backend, model, curves: dict) -> dict[str, float]:
    """E-V RMSE per phase against CP2K (meV/atom), one energy offset per model (its mean on diamond), as
    ``properties.eos_errors``: the β-Sn / BC8 errors include the error of their energy above diamond."""
    diffs = {phase: backend.predict(model, frames).energies_per_atom() - cp2k for phase, (frames, cp2k) in curves.items()}
    offset = diffs["diamond"].mean()
    return {phase: float(1000 * np.sqrt(np.mean((d - offset) ** 2))) for phase, d in diffs.items()}


if __name__ == "__main__":
    main()
