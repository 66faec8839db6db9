"""3C-SiC with real CP2K labels: the CP2K settings, independent held-out sets, and a PFD run's models on them.

The Si benchmarks' figures for a two-element material (issue 12, item 3). 3C-SiC (zincblende, the 8-atom
conventional cubic cell, PBE a = 4.38 Å) labelled by the PFD labeller (``cp2k_static_maker``, PBE,
DZVP-MOLOPT-SR-GTH basis sets and GTH-PBE-q4 pseudopotentials for Si and C from ``cp2k-data``), with the
cutoff and k-mesh of :data:`CUTOFF` and :data:`KPOINTS` (measured with ``--convergence``). Three modes:

- ``--convergence``: energy (eV/atom), forces (eV/Å) and wall time of one strained (±3 %) and rattled
  (σ 0.1 Å) SiC8 cell against the plane-wave cutoff (300-600 Ry at 4x4x4) and the k-mesh (3x3x3-6x6x6 at
  :data:`CUTOFF`), one CP2K process, one thread; ``results/sic_cp2k_convergence.json``.
- default: the held-out sets, made apart from any PFD run (own seeds) and cached in ``benchmarks/data/`` with
  the settings that made them: ``--rattled`` strained (±4 %) + rattled (σ 0.05-0.15 Å, cycled) cells and
  ``--per-temperature`` frames of Langevin MD with the zero-shot DPA-4 at each of ``--temperatures``
  (``held_out_md.run_md``), labelled by one single-threaded CP2K process (a rerun resumes: finished labels
  are reused). Then the zero-shot DPA-4 and, with ``--run``, a finished PFD run's teacher (PF) and student
  (PFD) are tested on them: energy RMSE (eV/atom, raw and mean offset removed) and force RMSE (eV/Å), overall
  and per element, per kind of frame and temperature; ``results/held_out_sic[_TAG].json``. Rattled frames
  pass the PFD loop's pre-label filter (``FrameFilter()``) first, as in ``held_out_phases.py``.
- ``--reference``: the CP2K E-V curve of the 8-atom cell (9 volumes, linear strain ±6 %, :data:`KPOINTS`) and
  the phonon bands of its 2x2x2 supercell (64 atoms, 2x2x2 k-points, two displaced cells), through
  ``cp2k_reference.compute``; cached in ``data/sic_cp2k_reference.json.gz`` (``--reanalyse``: the phonons
  again from the kept CP2K forces). ``--properties [--run RUN_DIR]``: the zero-shot DPA-4 and a run's PF
  and PFD against it (a0, B0, E-V RMSE, band RMSE; ``results/properties_sic[_TAG].json``).
- ``--pfd RUN_DIR``: PFD on 3C-SiC with the demo's settings (``cli.demo.demo_maker``) and the SiC labeller,
  as ``multi_phase.py`` does for three Si phases (hours on 2 cores; a rerun resumes); ``results/sic.json``.
  ``--dry-run`` only builds the flow; ``--quick`` uses the demo's smoke-run settings (``results/quick/``).

Usage: ``.venv/bin/python benchmarks/sic.py [--convergence] [--reference [--reanalyse]] [--properties]
[--run RUN_DIR [--tag NAME]] [--pfd RUN_DIR
[--workers 2] [--dry-run] [--quick]] [--out DIR]``
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import environment, save, set_threads, si_frames
from _dft_labels import DATA, cached_dataset, kept_frames, label_and_cache
from held_out_md import rmse_row, run_md

RESULTS = Path(__file__).resolve().parent / "results"
#: GTH/MOLOPT names of cp2k-data (``/usr/share/cp2k``: BASIS_MOLOPT, GTH_POTENTIALS), 4 valence electrons each
BASIS = {"Si": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q4"), "C": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q4")}
CUTOFF = 400.0  # Ry, from --convergence
KPOINTS = (4, 4, 4)  # from --convergence
A_PBE = 4.38  # Å, 3C-SiC PBE lattice constant
CPU = "1 thread, CPU"


def sic_cell(a: float = A_PBE):
    """8-atom conventional cubic cell of 3C-SiC (zincblende, lattice constant ``a`` in Å) as ASE ``Atoms``."""
    from ase.build import bulk

    return bulk("SiC", "zincblende", a=a, cubic=True)


def static_kwargs(cutoff: float = CUTOFF) -> dict:
    """``cp2k_static_maker`` arguments of the SiC labeller besides the k-mesh (cutoff in Ry)."""
    return {"basis_and_potential": BASIS, "cutoff": float(cutoff)}


def sic_labeller(min_success_ratio: float = 0.75):
    """The PFD labeller for SiC: ``LabelMaker`` over ``cp2k_static_maker`` with :data:`KPOINTS`, :data:`CUTOFF`."""
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.label.flows import LabelMaker

    return LabelMaker(static_maker=cp2k_static_maker(kpoints=KPOINTS, **static_kwargs()),
                      min_success_ratio=min_success_ratio)


# --- CP2K settings -------------------------------------------------------------------------------------------

def _cp2k_once(frame, kpoints, cutoff: float, workdir: Path) -> dict:
    """One CP2K static run in this process (CP2K with one thread): energy (eV/atom), forces (eV/Å), wall s."""
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from pfd_atomate.label.adapters import labels_from_fields, task_doc_fields
    from pfd_atomate.label.cp2k import cp2k_static_maker

    job = cp2k_static_maker(kpoints=kpoints, **static_kwargs(cutoff)).make(frame.to_structure())
    start = time.perf_counter()
    responses = run_locally(job, store=JobStore(MemoryStore()), root_dir=workdir, create_folders=True,
                            ensure_success=True, log=False)
    wall = time.perf_counter() - start
    fields = task_doc_fields(responses[job.uuid][1].output)
    _, energy, forces, _ = labels_from_fields(fields, "cp2k")
    return {"kpoints": list(kpoints), "cutoff_ry": cutoff, "energy_ev_per_atom": energy / frame.n_atoms,
            "forces_ev_per_a": np.asarray(forces).tolist(), "wall_s": wall,
            "cp2k_s": _cp2k_time(Path(str(fields["dir_name"]).split(":", 1)[-1]))}


def _cp2k_time(job_dir: Path) -> float | None:
    """CP2K's own total time (s) from the timing report of its output in ``job_dir`` (the job's wall time
    also counts custodian's polling, in steps of 10 s)."""
    import re

    for out in sorted(job_dir.glob("cp2k.out*")):
        text = gzip.open(out, "rt").read() if out.suffix == ".gz" else out.read_text()
        found = re.findall(r"^ CP2K\s+1\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$", text, flags=re.MULTILINE)
        if found:
            return float(found[-1])
    return None


def _series(frame, points, workdir: Path, e_tol: float, f_tol: float) -> dict:
    """CP2K at each (k-mesh, cutoff) of ``points`` (cheapest first), compared with the last (densest) one:
    energy difference (meV/atom) and largest absolute force-component difference (eV/Å); the first point
    within both tolerances (eV/atom, eV/Å) is ``chosen``."""
    runs = []
    for kp, cutoff in points:
        runs.append(_cp2k_once(frame, kp, cutoff, workdir))
        print(f"k {kp} {cutoff:g} Ry: {runs[-1]['energy_ev_per_atom']:.6f} eV/atom, {runs[-1]['wall_s']:.0f} s "
              f"(CP2K {runs[-1]['cp2k_s']} s)",
              flush=True)
    ref = runs[-1]
    for r in runs:
        r["energy_diff_mev_per_atom"] = 1000 * (r["energy_ev_per_atom"] - ref["energy_ev_per_atom"])
        r["max_force_diff_ev_per_a"] = float(np.max(np.abs(np.subtract(r["forces_ev_per_a"], ref["forces_ev_per_a"]))))
    ok = [r for r in runs
          if abs(r["energy_diff_mev_per_atom"]) <= 1000 * e_tol and r["max_force_diff_ev_per_a"] <= f_tol]
    return {"runs": runs, "chosen": ok[0]}


def convergence(cutoffs, meshes, seed: int, e_tol: float = 1e-3, f_tol: float = 0.01) -> dict:
    """Cutoff series (Ry, at 4x4x4), then k-mesh series at the cutoff it picks, on one strained (±3 %) and
    rattled (σ 0.1 Å) SiC8 cell; tolerances ``e_tol`` (eV/atom) and ``f_tol`` (eV/Å) against the densest point."""
    frame = si_frames(1, seed, strain=0.03, displacements=(0.1,), phase="sic", atoms=sic_cell())[0]
    with tempfile.TemporaryDirectory(prefix="sic-conv-") as tmp:
        cut = _series(frame, [((4, 4, 4), c) for c in cutoffs], Path(tmp), e_tol, f_tol)
        kpt = _series(frame, [(tuple(m), cut["chosen"]["cutoff_ry"]) for m in meshes], Path(tmp), e_tol, f_tol)
    return {"frame": json.loads(frame.model_dump_json()),
            "tolerance": {"energy_mev_per_atom": 1000 * e_tol, "max_force_ev_per_a": f_tol},
            "cutoff_series": cut["runs"], "kpoint_series": kpt["runs"],
            "chosen": {k: kpt["chosen"][k] for k in ("cutoff_ry", "kpoints", "wall_s", "cp2k_s")}}


# --- CP2K reference properties -------------------------------------------------------------------------------

REFERENCE = DATA / "sic_cp2k_reference.json.gz"
#: E-V of the 8-atom cell on the labels' mesh; phonons of its 2x2x2 supercell (64 atoms, 8.8 Å) at the same
#: k-point density (2x2x2), two displaced cells (one per element) by symmetry
REFERENCE_SETTINGS = {
    "labeller": f"CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker ({BASIS}, {CUTOFF:g} Ry)",
    "eos": {"cell": "conventional 3C-SiC8", "kpoints": list(KPOINTS), "linear_strain": [-0.06, 0.06],
            "number_of_frames": 9, "start_a": A_PBE},
    "phonons": {"supercell_matrix": [[2, 0, 0], [0, 2, 0], [0, 0, 2]], "n_atoms": 64, "kpoints": [2, 2, 2],
                "displacement": 0.01, "npoints_band": 51},
}


def sic_structure(a: float = A_PBE):
    """:func:`sic_cell` as a pymatgen Structure."""
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(sic_cell(a))


def load_sic_reference(recompute: bool = False) -> dict:
    """The CP2K E-V curve and phonon bands of 3C-SiC (``cp2k_reference.compute`` with the SiC labeller's
    settings), computed once (one CP2K process, one thread) and cached in ``data/sic_cp2k_reference.json.gz``."""
    from cp2k_reference import compute

    if REFERENCE.exists() and not recompute:
        return json.loads(gzip.decompress(REFERENCE.read_bytes()))
    from _dft_labels import label_workdir

    return save_sic_reference(compute(label_workdir() / "sic-cp2k-reference", sic_structure, REFERENCE_SETTINGS,
                                      static_kwargs(), "3C-SiC"))


def save_sic_reference(ref: dict) -> dict:
    """Write ``ref`` to ``data/sic_cp2k_reference.json.gz`` (gzipped JSON) and return it."""
    REFERENCE.write_bytes(gzip.compress(json.dumps(ref).encode()))
    print(f"wrote {REFERENCE}", flush=True)
    return ref


def model_properties_sic(run_dir: Path | None) -> dict:
    """The zero-shot DPA-4 and a run's PF and PFD against :func:`load_sic_reference`: a0, B0, E-V RMSE
    (meV/atom, offset removed), phonon band RMSE (THz) through atomate2's force-field EOS and phonon flows
    (``properties.model_properties`` on the SiC cell); band plots in ``results/properties/``."""
    from _dft_labels import label_workdir
    from properties import gamma_optical, model_properties

    from pfd_atomate.train.deepmd import DeepMDBackend
    from pfd_atomate.validation.jobs import CalculatorSpec

    ref = load_sic_reference()
    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    out = {"cp2k": {"a0": ref["eos"]["a0"], "b0_gpa": ref["eos"]["fit"]["b0"],
                    "gamma_optical_thz": gamma_optical(ref["phonons"]["band_structure"]),
                    "max_frequency_thz": ref["phonons"]["max_frequency_thz"],
                    "n_displaced_cells": ref["phonons"]["n_displacements"],
                    "eos_wall_s": ref["eos"]["wall_s"], "phonon_wall_s": ref["phonons"]["wall_s"]}, "models": {}}
    (RESULTS / "properties").mkdir(parents=True, exist_ok=True)
    for name, model in run_models(run_dir).items():
        spec = CalculatorSpec.from_model(model, backend, name=name)
        row = model_properties(name, spec, ref, label_workdir().parent / "sic-properties-jobs" / name.split()[0].lower(),
                               "sic", make_cell=sic_structure)
        out["models"][name] = row
        print(f"{name}: a0 {row['eos']['a0']:.4f} Å (CP2K {ref['eos']['a0']:.4f}), B0 {row['eos']['b0_gpa']:.1f} GPa "
              f"(CP2K {ref['eos']['fit']['b0']:.1f}), E-V RMSE {row['eos_rmse_mev_per_atom']['diamond']:.1f} meV/atom; "
              f"band RMSE {row['phonons']['band_rmse']:.3f} THz", flush=True)
    return out


# --- held-out sets -------------------------------------------------------------------------------------------

def sic_held_out(rattled: int, temperatures, per_temperature: int, seed: int, relabel: bool = False):
    """CP2K-labelled strained/rattled and MD frames of 3C-SiC8, cached in ``data/``; (Dataset, meta)."""
    from pfd_atomate.data import Dataset

    settings = {"system": f"3C-SiC, 8-atom conventional cubic cell (a = {A_PBE} Å)", "rattled": rattled,
                "rattle": "si_frames(strain 0.04, displacements 0.05-0.15 Å)", "temperatures_K": list(temperatures),
                "per_temperature": per_temperature, "seed": seed,
                "md": "ASE Langevin, 2 fs, friction 0.01, pretrained DPA-4 (dpa4-neo), 200 steps to equilibrate, "
                      "a frame every 40 steps", "kpoints": list(KPOINTS), "cutoff_ry": CUTOFF,
                "basis_and_potential": {el: list(bp) for el, bp in BASIS.items()},
                "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker"}
    name = f"sic8_cp2k_k{''.join(map(str, KPOINTS))}_c{CUTOFF:g}_r{rattled}" \
           f"_md{'-'.join(f'{t:g}' for t in temperatures)}K_n{per_temperature}_s{seed}"
    path = DATA / f"{name}.json.gz"
    if (cached := cached_dataset(path, settings, relabel)) is not None:
        return cached

    def make():
        cell = sic_cell()
        md, md_wall = run_md(temperatures, per_temperature, seed + 100, phase="sic", atoms=cell, n_procs=1)
        strained = si_frames(rattled, seed, displacements=(0.05, 0.1, 0.15), phase="sic", atoms=cell)
        return Dataset.concat([strained, md], name=name), md_wall

    frames, md_wall = kept_frames(name, make, relabel)
    return label_and_cache(frames, path, settings, KPOINTS, n_procs=1, static_kwargs=static_kwargs(), md_wall_s=md_wall,
                           cp2k=CPU)


def held_out_sets(data) -> dict:
    """Group name → labelled Dataset: "rattled" (after ``FrameFilter()``), "md:T<K>" per temperature, "md"."""
    from pfd_atomate.data import Dataset
    from pfd_atomate.select.filters import FrameFilter

    def group(frame) -> str:  # "sic:md:nvt:T900:dpa4-zero-shot;label:..." -> "md:T900"
        src = frame.source.split(";")[0]
        return "md:" + src.split(":")[3] if src.startswith("sic:md") else "rattled"

    groups = [group(f) for f in data.frames]
    names = ["rattled", *sorted({g for g in groups if g != "rattled"}, key=lambda g: float(g[4:]))]
    sets = {g: data.subset([i for i, gg in enumerate(groups) if gg == g], name=g) for g in names}
    sets["rattled"], rejected = FrameFilter().apply(sets["rattled"])
    if sum(rejected.values()):
        print(f"the pre-label filter drops {rejected} rattled frames", flush=True)
    sets["md"] = Dataset.concat([d for g, d in sets.items() if g.startswith("md:")], name="md")
    sets["all"] = Dataset.concat([sets["rattled"], sets["md"]], name="all")
    return sets


def element_force_rmse(reference, predicted) -> dict[str, float]:
    """Force RMSE (eV/Å) over the Cartesian components of each element's atoms, all frames together."""
    species = np.concatenate([f.species for f in reference.frames])
    diff = np.concatenate([np.subtract(p.forces, r.forces) for r, p in zip(reference, predicted, strict=True)])
    return {str(el): float(np.sqrt(np.mean(diff[species == el] ** 2))) for el in sorted(set(species))}


def run_models(run_dir: Path | None) -> dict:
    """Model name → ModelFile: the zero-shot DPA-4 and, from a finished run, PF (teacher) and PFD (student)
    (``_common.run_models`` for the run's formula)."""
    from _common import run_models as models_of_run
    from pymatgen.io.ase import AseAtomsAdaptor

    formula = AseAtomsAdaptor.get_structure(sic_cell()).composition.reduced_formula  # PFDMaker's run formula
    return models_of_run(run_dir, formula=formula)[1]


def evaluate(sets: dict, models: dict) -> dict:
    """Group → model → energy RMSE (eV/atom, raw and offset removed), force RMSE (eV/Å), per element too."""
    from pfd_atomate.train.deepmd import DeepMDBackend

    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    preds = {name: backend.predict(model, sets["all"]) for name, model in models.items()}
    index = {f.fingerprint(): i for i, f in enumerate(sets["all"].frames)}
    table: dict = {}
    for g, data in sets.items():
        idx = [index[f.fingerprint()] for f in data.frames]
        table[g] = {}
        for name, pred in preds.items():
            sub = pred.subset(idx)
            table[g][name] = {**rmse_row(data, sub), "force_rmse_per_element_ev_per_a": element_force_rmse(data, sub)}
    return table


# --- PFD run -------------------------------------------------------------------------------------------------

def sic_maker(quick: bool = False):
    """The demo's PFDMaker (``quick``: its smoke-run settings) with the SiC CP2K labeller
    (``LabelMaker(min_success_ratio=0.75)``)."""
    from pfd_atomate.cli.demo import demo_maker

    return dataclasses.replace(demo_maker(quick=quick), label=sic_labeller())


def run_pfd(run_dir: Path, workers: int, dry_run: bool, quick: bool = False) -> dict | None:
    """Run (or resume) PFD on 3C-SiC in ``run_dir``; the summary of ``multi_phase.py`` (None for a dry run)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate import queries
    from pfd_atomate.workflows.local import open_run_store, run_flow

    structure = AseAtomsAdaptor.get_structure(sic_cell())
    flow = sic_maker(quick).make(structure)
    print(f"flow {flow.name!r}: {len(flow.jobs)} top-level jobs for {structure.composition.reduced_formula}")
    if dry_run:
        return None
    start = time.perf_counter()
    result = run_flow(flow, run_dir, workers=workers)
    if not result.completed:
        raise SystemExit(f"the flow ended {result.state}: {result.failed}")
    with open_run_store(run_dir) as (store, _, _):
        doc = queries.run_report(store, result.flow_uuid)
    return {
        "benchmark": "sic", "environment": environment(1), "run_dir": str(run_dir), "system": "3C-SiC, 8-atom cell",
        "mode": "quick" if quick else "full",
        "labeller": {"kpoints": list(KPOINTS), "cutoff_ry": CUTOFF, "basis_and_potential": BASIS},
        "workers": workers, "wall_time_s": result.wall_time_s, "session_wall_s": time.perf_counter() - start,
        "resumed": result.resumed, "dft_labels_spent": doc["n_dft_labels"],
        "dft_labels_initial": doc["n_initial_labels"], "dft_labels_in_loop": doc["n_loop_labels"],
        "label_failures": doc["n_label_failures"], "iterations": doc["n_iterations"], "converged": doc["converged"],
        "iteration_metrics": [{k: it[k] for k in ("stage", "iteration", "n_train_frames", "n_labelled", "energy_rmse",
                                                  "force_rmse", "accurate_ratio", "converged", "n_added")}
                              for it in doc["iterations"]],
        "distill_train_frames": doc["n_distill_frames"], "student_vs_teacher_held_out": doc["student_teacher_test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convergence", action="store_true", help="measure the CP2K cutoff and k-mesh series")
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[300.0, 400.0, 500.0, 600.0])
    parser.add_argument("--meshes", type=int, nargs="+", default=[3, 4, 6], help="n for n x n x n k-meshes")
    parser.add_argument("--rattled", type=int, default=12)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 900.0, 1500.0])
    parser.add_argument("--per-temperature", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5151)
    parser.add_argument("--run", type=Path, default=None, help="a finished PFD run folder to test")
    parser.add_argument("--tag", default="", help="suffix of the result file (e.g. the run's name)")
    parser.add_argument("--pfd", type=Path, default=None, metavar="RUN_DIR", help="run PFD on 3C-SiC here")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="with --pfd: build the flow only")
    parser.add_argument("--quick", action="store_true", help="with --pfd: the demo's smoke-run settings")
    parser.add_argument("--reference", action="store_true", help="compute the CP2K E-V curve and phonon bands")
    parser.add_argument("--recompute", action="store_true", help="with --reference: run CP2K again")
    parser.add_argument("--reanalyse", action="store_true",
                        help="with --reference: analyse the phonons again from the kept CP2K forces")
    parser.add_argument("--properties", action="store_true",
                        help="the zero-shot DPA-4 (and with --run: PF, PFD) against the CP2K reference")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    set_threads(1)
    if args.convergence:
        result = {"benchmark": "sic_cp2k_convergence", "environment": environment(1), "cp2k": CPU,
                  "system": "3C-SiC 8-atom cubic cell, a = 4.38 Å, strained (±3 %) and rattled (σ 0.1 Å), seed "
                            f"{args.seed}", "basis_and_potential": BASIS,
                  **convergence(args.cutoffs, [(n, n, n) for n in args.meshes], args.seed)}
        save("sic_cp2k_convergence", result, args.out)
        return
    if args.reference:
        ref = load_sic_reference(args.recompute)
        if args.reanalyse:
            from _dft_labels import label_workdir
            from cp2k_reference import reanalyse_phonons

            ref = save_sic_reference(reanalyse_phonons(ref, label_workdir() / "sic-cp2k-reference", sic_structure,
                                                       static_kwargs()))
        print(f"CP2K 3C-SiC: a0 {ref['eos']['a0']:.4f} Å, B0 {ref['eos']['fit']['b0']:.1f} GPa; phonons max "
              f"{ref['phonons']['max_frequency_thz']:.2f} THz, {ref['phonons']['n_displacements']} displaced cells, "
              f"{ref['eos']['wall_s'] + ref['phonons']['wall_s']:.0f} s", flush=True)
        return
    if args.properties:
        result = {"benchmark": "properties_sic", "environment": environment(1), "run": str(args.run),
                  "system": "3C-SiC, CP2K PBE reference (benchmarks/data/sic_cp2k_reference.json.gz)",
                  **model_properties_sic(None if args.run is None else args.run.resolve())}
        save(f"properties_sic_{args.tag}" if args.tag else "properties_sic", result, args.out)
        return
    if args.pfd is not None:
        summary = run_pfd(args.pfd, args.workers, args.dry_run, args.quick)
        if summary is not None:
            print(json.dumps({k: v for k, v in summary.items() if k != "iteration_metrics"}, indent=1, default=str))
            save("sic", summary, args.out)
        return
    data, meta = sic_held_out(args.rattled, args.temperatures, args.per_temperature, args.seed)
    print(f"{len(data)} CP2K frames (MD {meta['md_wall_s']:.0f} s, CP2K {meta['cp2k_wall_s']:.0f} s)", flush=True)
    sets = held_out_sets(data)
    result = {"benchmark": "held_out_sic", "environment": environment(1),
              "meta": {k: v for k, v in meta.items() if k != "input_indices"},
              "sets": {g: len(d) for g, d in sets.items()}, "run": None if args.run is None else str(args.run)}
    result["rmse"] = evaluate(sets, run_models(None if args.run is None else args.run.resolve()))
    for g, row in result["rmse"].items():
        print(g, len(sets[g]), {n: (round(1000 * v["energy_rmse_offset_removed_ev_per_atom"], 1),
                                    round(v["force_rmse_ev_per_a"], 3),
                                    {el: round(x, 3) for el, x in v["force_rmse_per_element_ev_per_a"].items()})
                                for n, v in row.items()})
    save(f"held_out_sic_{args.tag}" if args.tag else "held_out_sic", result, args.out)


if __name__ == "__main__":
    main()
