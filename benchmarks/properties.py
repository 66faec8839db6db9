"""Diamond-Si properties of a PFD run's models against CP2K: energy-volume curve and phonon bands.

The models of a finished run (PF: the fine-tuned teacher; PFD: the distilled student) and the
zero-shot foundation model run atomate2's own force-field EOS and phonon flows
(:func:`pfd_atomate.validation.eos.force_field_eos_maker`, :func:`pfd_atomate.validation.phonons.force_field_phonon_maker`,
through ``CalculatorSpec.run`` → ``run_with_model``) on the structures, strains and supercell of the
cached CP2K reference (``benchmarks/cp2k_reference.py``). Reported: V0 (Å^3/atom), a0 (Å) and B0 (GPa)
against CP2K; the autoplex band RMSE (THz) against the CP2K band structure, the Γ optical frequency and
the largest frequency error; a band plot per model.

Usage: ``.venv/bin/python benchmarks/properties.py --run benchmarks/runs/demo-full``
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
from _common import environment, save
from cp2k_reference import load_phases, load_reference

RESULTS = Path(__file__).resolve().parent / "results"


def _resolved(flow, workdir: Path):
    from jobflow import JobStore, run_locally
    from jobflow.core.reference import find_and_resolve_references
    from maggma.stores import MemoryStore

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    workdir.mkdir(parents=True, exist_ok=True)
    run_locally(flow, store=store, root_dir=workdir, create_folders=True, ensure_success=True, log=False)
    return find_and_resolve_references(flow.output, store)


def si_phase_references(kpoint_density: float | None = None) -> tuple[dict, dict]:
    """The CP2K references of Si: (diamond reference, β-Sn/BC8 E-V curves by phase; empty when not cached).

    With ``kpoint_density`` the E-V curves of all three phases come from ``cp2k_reference.py --phases
    --kpoint-density`` (each phase on the mesh a PFD run's labeller gives it): the diamond curve and fit in the
    returned reference are replaced by that one, and the phonon reference keeps the lattice constant it was
    computed at (``phonons.a0``).

    Raises
    ------
    FileNotFoundError: the curves at ``kpoint_density`` were never computed.
    """
    ref = load_reference()
    doc = load_phases(kpoint_density)
    if kpoint_density is None:
        return ref, (doc or {}).get("phases", {})
    if doc is None:
        raise FileNotFoundError(f"no CP2K E-V curves at k-point density {kpoint_density:g}: run "
                                f"cp2k_reference.py --phases --kpoint-density {kpoint_density:g}")
    phases = dict(doc["phases"])
    diamond = phases.pop("diamond")
    eos = {**diamond, "a0": float((diamond["fit"]["v0"] * 8) ** (1 / 3))}
    settings = {**ref["settings"], "eos": {**ref["settings"]["eos"], "kpoints": diamond["kpoints"]}}
    return {**ref, "settings": settings, "eos": eos, "phonons": {**ref["phonons"], "a0": ref["eos"]["a0"]}}, phases


def model_properties(name: str, spec, ref: dict, workdir: Path, tag: str = "", make_cell=None,
                     phases: dict | None = None) -> dict:
    """E-V fit and phonon comparison of one model against the CP2K reference ``ref``.

    ``make_cell(a)``: the reference's 8-atom cubic cell at lattice constant ``a`` (Å) as a Structure (default
    diamond Si); ``phases``: CP2K E-V curves of further Si phases to compare with (phase → points and fit, as
    :func:`si_phase_references` gives them).
    """
    from pfd_atomate.cli.demo import diamond_si
    from pfd_atomate.validation.eos import fit_eos, force_field_eos_maker
    from pfd_atomate.validation.phonons import (
        compare_band_structures,
        force_field_phonon_maker,
    )

    eos_set, ph_set = ref["settings"]["eos"], ref["settings"]["phonons"]
    make_cell = make_cell or diamond_si
    out: dict = {}
    start = time.perf_counter()
    eos_maker = force_field_eos_maker(tuple(eos_set["linear_strain"]), eos_set["number_of_frames"])
    curve = _resolved(spec.run(eos_maker, make_cell(eos_set["start_a"])), workdir / "eos")["relax"]
    cp2k = ref["eos"]["fit"]
    out["eos"] = {"volumes": [v / 8 for v in curve["volume"]], "energies": [e / 8 for e in curve["energy"]]}
    try:
        fit = fit_eos(curve["volume"], curve["energy"], 8, "diamond", name)
    except ValueError as err:  # no minimum in the sampled range: a failure of the model, recorded
        fit = None
        out["eos"]["failed"] = str(err)
    else:
        out["eos"] |= {"v0": fit.v0, "e0": fit.e0, "a0": (fit.v0 * 8) ** (1 / 3), "b0_gpa": fit.b0,
                       "b0_prime": fit.b0_prime, "v0_error_percent": 100 * (fit.v0 - cp2k["v0"]) / cp2k["v0"],
                       "b0_error_gpa": fit.b0 - cp2k["b0"]}
    out["eos"]["wall_s"] = time.perf_counter() - start
    # energies above diamond from its fitted minimum, or from its lowest point when it has none
    e0_diamond = fit.e0 if fit is not None else min(curve["energy"]) / 8
    if phases:  # β-Sn and BC8: V0, B0 and the energy above diamond, against CP2K
        from _common import si_phase
        from pymatgen.io.ase import AseAtomsAdaptor

        out["phases"] = {}
        for phase, cp2k_phase in phases.items():
            structure = AseAtomsAdaptor.get_structure(si_phase(phase))
            points = _resolved(spec.run(eos_maker, structure), workdir / f"eos-{phase}")["relax"]
            per_atom = {"volumes": [v / len(structure) for v in points["volume"]],
                        "energies": [e / len(structure) for e in points["energy"]]}
            try:
                pfit = fit_eos(points["volume"], points["energy"], len(structure), phase, name)
            except ValueError as err:  # no minimum in the sampled range: a failure of the model, recorded
                out["phases"][phase] = {"failed": str(err), **per_atom}
                continue
            ref_fit = cp2k_phase["fit"]
            out["phases"][phase] = {
                **per_atom, "v0": pfit.v0, "b0_gpa": pfit.b0, "energy_above_diamond_ev_per_atom": pfit.e0 - e0_diamond,
                "cp2k_v0": ref_fit["v0"], "cp2k_b0_gpa": ref_fit["b0"],
                "cp2k_energy_above_diamond_ev_per_atom": ref_fit["e0"] - cp2k["e0"]}
    out["eos_rmse_mev_per_atom"] = eos_errors(out, ref, phases)
    start = time.perf_counter()
    ph_maker = force_field_phonon_maker(displacement=ph_set["displacement"], npoints=ph_set["npoints_band"])
    a0 = ref["phonons"].get("a0", ref["eos"]["a0"])  # the cell CP2K's phonons were computed in
    doc = _resolved(spec.run(ph_maker, make_cell(a0), {"supercell_matrix": ph_set["supercell_matrix"]}),
                    workdir / "phonons")
    png = RESULTS / "properties" / f"phonons_{slug(name)}{'_' + tag if tag else ''}.png"
    bs = doc.phonon_bandstructure if hasattr(doc, "phonon_bandstructure") else doc["phonon_bandstructure"]
    comparison = compare_band_structures(bs, ref["phonons"]["band_structure"], name, "CP2K", plot_path=png)
    out["phonons"] = {**comparison.model_dump(exclude={"plot"}), "plot": str(png.relative_to(RESULTS.parent)),
                      "gamma_optical_thz": gamma_optical(bs),
                      "wall_s": time.perf_counter() - start}
    return out


def slug(name: str) -> str:
    """A model's name in file names: "dpa-4", "pf", "pfd" for the run's three, else the whole name."""
    standard = {"DPA-4 zero-shot": "dpa-4", "PF (teacher)": "pf", "PFD (student)": "pfd"}
    return standard.get(name) or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")

def cp2k_curves(ref: dict, phases: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CP2K E-V points per phase: phase -> (volumes Å^3/atom, energies eV/atom). "diamond" is the curve of the
    8-atom cell of ``ref``; the other phases' curves come from ``phases`` (see :func:`si_phase_references`)."""
    curves = {"diamond": (np.array(ref["eos"]["volumes"]) / 8, np.array(ref["eos"]["energies"]) / 8)}
    if phases:
        for phase, data in phases.items():
            n_atoms = data["fit"]["n_atoms"]
            curves[phase] = (np.array(data["volumes"]) / n_atoms, np.array(data["energies"]) / n_atoms)
    return curves


def eos_errors(row: dict, ref: dict, phases: dict | None = None) -> dict[str, float]:
    """E-V RMSE against CP2K per phase (meV/atom) of one ``model_properties`` output, on CP2K's volumes
    (``ref``, ``phases``: see :func:`cp2k_curves`).

    One energy offset per model (its mean deviation from CP2K over the diamond points) is removed from
    every phase, so the β-Sn and BC8 errors include the error of their energy above diamond. Unlike B0
    from a Birch-Murnaghan fit, this stays defined when a model's curve has no minimum in the range.

    Raises
    ------
    ValueError: the model's volumes are not CP2K's (other strains or start structures).
    """
    curves = {"diamond": row.get("eos", {})} | row.get("phases", {})
    reference = cp2k_curves(ref, phases)
    offset = None
    out: dict[str, float] = {}
    for phase, (volumes, energies) in reference.items():
        curve = curves.get(phase, {})
        if "volumes" not in curve:
            continue
        if not np.allclose(curve["volumes"], volumes, rtol=1e-4):
            raise ValueError(f"{phase}: the model's E-V volumes are not CP2K's")
        diff = np.array(curve["energies"]) - energies
        offset = diff.mean() if offset is None else offset  # diamond comes first
        out[phase] = float(1000 * np.sqrt(np.mean((diff - offset) ** 2)))
    return out


def plot_eos(models: dict[str, dict], path: Path, ref: dict, phases: dict | None = None) -> None:
    """E-V curves per phase: each model's energies (eV/atom, from its own diamond minimum) against CP2K's points.

    ``models``: name -> ``model_properties`` output; ``ref``, ``phases``: the CP2K curves (:func:`cp2k_curves`).
    """
    from _common import pyplot, save_figure

    e0_cp2k = ref["eos"]["fit"]["e0"]
    cp2k = cp2k_curves(ref, phases)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cp2k), figsize=(4.2 * len(cp2k), 3.6))
    for ax, (phase, (volumes, energies)) in zip(np.atleast_1d(axes), cp2k.items()):
        ax.plot(volumes, 1000 * (energies - e0_cp2k), "ko", label="CP2K")
        for name, row in models.items():
            if "eos" not in row:
                continue
            curve = row["eos"] if phase == "diamond" else row.get("phases", {}).get(phase, {})
            if "volumes" in curve:
                e0 = row["eos"].get("e0", min(row["eos"]["energies"]))
                ax.plot(curve["volumes"], 1000 * (np.array(curve["energies"]) - e0), "-", label=name)
        ax.set_xlabel("volume (Å$^3$/atom)")
        ax.set_ylabel("E - E$_0$(diamond) (meV/atom)")
        ax.set_title(phase, fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    save_figure(fig, path)


def gamma_optical(band_structure: dict) -> float:
    """Highest frequency at Γ of a band structure dict, THz (the Raman-active optical mode of diamond Si)."""
    from pfd_atomate.validation.phonons import as_band_structure

    bs = as_band_structure(band_structure)
    at_gamma = [i for i, q in enumerate(bs.qpoints) if np.allclose(q.frac_coords, 0)]
    return float(bs.bands[:, at_gamma].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a finished PFD run folder (local engine); without it only DPA-4 and the --model models")
    parser.add_argument("--tag", default="", help="suffix of the result file (e.g. the run's name)")
    parser.add_argument("--kpoint-density", type=float, default=None,
                        help="E-V curves of all phases on the meshes of this CP2K k-point density (multi_phase.py's)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another deepmd-kit model to compare (repeatable)")
    parser.add_argument("--only-given-models", action="store_true",
                        help="measure only the --model models, not the run's own (measured before: DPA-4 is slow)")
    args = parser.parse_args()
    from _common import run_models

    from pfd_atomate.validation.jobs import CalculatorSpec

    ref, phases = si_phase_references(args.kpoint_density)
    backend, models = run_models(None if args.run is None else args.run.resolve(), args.model)
    if args.only_given_models:
        given = {m.split("=", 1)[0] for m in args.model}
        models = {name: model for name, model in models.items() if name in given}
    (RESULTS / "properties").mkdir(parents=True, exist_ok=True)
    from _dft_labels import label_workdir

    work = label_workdir().parent / "properties-jobs"
    result = {"benchmark": "properties", "environment": environment(1), "run": str(args.run),
              "system": "diamond Si, CP2K PBE reference (benchmarks/data/si_diamond_cp2k_reference.json.gz)",
              "kpoint_density": args.kpoint_density,
              "eos_kpoints": {"diamond": ref["settings"]["eos"]["kpoints"], **{p: d.get("kpoints") for p, d in phases.items()}},
              "cp2k": {"a0": ref["eos"]["a0"], "v0": ref["eos"]["fit"]["v0"], "b0_gpa": ref["eos"]["fit"]["b0"],
                       "gamma_optical_thz": gamma_optical(ref["phonons"]["band_structure"]),
                       "eos_wall_s": ref["eos"]["wall_s"], "phonon_wall_s": ref["phonons"]["wall_s"]},
              "models": {}}
    for name, model in models.items():
        spec = CalculatorSpec.from_model(model, backend, name=name)
        row = model_properties(name, spec, ref, work / slug(name), args.tag, phases=phases)
        eos = (row["eos"]["failed"] if "failed" in row["eos"] else
               f"a0 {row['eos']['a0']:.4f} Å (CP2K {ref['eos']['a0']:.4f}), B0 {row['eos']['b0_gpa']:.1f} GPa "
               f"(CP2K {ref['eos']['fit']['b0']:.1f})")
        print(f"{name}: {eos}; band RMSE {row['phonons']['band_rmse']:.3f} THz, "
              f"max |Δω| {row['phonons']['max_abs_error']:.3f} THz; E-V RMSE "
              f"{ {k: round(v, 1) for k, v in row['eos_rmse_mev_per_atom'].items()} } meV/atom", flush=True)
        for phase, r in row.get("phases", {}).items():
            if "failed" in r:
                print(f"  {phase}: {r['failed']}", flush=True)
                continue
            print(f"  {phase}: V0 {r['v0']:.3f} (CP2K {r['cp2k_v0']:.3f}) Å^3/atom, B0 {r['b0_gpa']:.1f} "
                  f"(CP2K {r['cp2k_b0_gpa']:.1f}) GPa, above diamond {1000 * r['energy_above_diamond_ev_per_atom']:.0f} "
                  f"(CP2K {1000 * r['cp2k_energy_above_diamond_ev_per_atom']:.0f}) meV/atom", flush=True)
        result["models"][name] = row
    save(f"properties_{args.tag}" if args.tag else "properties", result, RESULTS)
    plot_eos(result["models"], RESULTS / "properties" / f"eos_{args.tag or 'run'}.png", ref, phases)


if __name__ == "__main__":
    main()
