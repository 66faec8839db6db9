"""CP2K (PBE) reference properties of diamond Si: energy-volume curve and phonon band structure.

Runs atomate2's own flows with CP2K static jobs, the same settings as the PFD labels
(:func:`pfd_atomate.label.cp2k.cp2k_static_maker`):

1. energy-volume curve of the 8-atom diamond cell (k-mesh 3x3x3 as the labels, 9 volumes, linear
   strain -6 % .. +6 %, :func:`pfd_atomate.validation.eos.cp2k_eos_maker`), Birch-Murnaghan fit → a0;
2. phonons at a0 by finite displacements (:class:`pfd_atomate.validation.phonons.Cp2kPhononMaker`):
   the 2x2x2 supercell of the conventional cell (64 atoms, k-mesh 2x2x2, the same k-point density
   as 4x4x4 on the 8-atom cell) needs one displaced cell by symmetry.

The result (settings, E-V points, fit, the band structure as pymatgen's dict, wall times) is cached in
``benchmarks/data/si_diamond_cp2k_reference.json.gz``; ``benchmarks/properties.py`` compares models
with it. A rerun with the cache present does nothing unless ``--recompute``.

``--phases`` adds the E-V curves of the β-Sn and BC8 cells (``_common.si_phase``, k-mesh 4x4x4 as their
held-out sets, same strains; positions fixed), cached in ``benchmarks/data/si_phases_cp2k_eos.json.gz``.
``--phases --kpoint-density D`` makes the curves of all three phases (diamond too) on the meshes that
``multi_phase.py --kpoint-density D``'s labeller gives their cells, in ``si_phases_cp2k_eos_kdD.json.gz``.

Usage: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cp2k_reference.py [--recompute] [--phases [--kpoint-density D]]``
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
CACHE = DATA / "si_diamond_cp2k_reference.json.gz"
SETTINGS = {
    "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker (DZVP-MOLOPT-SR-GTH, GTH-PBE-q4, 300 Ry)",
    "eos": {"cell": "conventional diamond Si8", "kpoints": [3, 3, 3], "linear_strain": [-0.06, 0.06],
            "number_of_frames": 9, "start_a": 5.43},
    "phonons": {"supercell_matrix": [[2, 0, 0], [0, 2, 0], [0, 0, 2]], "n_atoms": 64, "kpoints": [2, 2, 2],
                "displacement": 0.01, "npoints_band": 51},
}


def load_reference() -> dict:
    """The cached reference (raises FileNotFoundError when it was never computed)."""
    with gzip.open(CACHE, "rt") as fh:
        return json.load(fh)


def _run(flow, workdir: Path):
    from jobflow import run_locally

    from pfd_atomate.store import embedded_store

    store = embedded_store(workdir)
    run_locally(flow, store=store, root_dir=workdir / "jobs", create_folders=True, ensure_success=True, log=False)
    store.connect()
    return store


def _phonon_maker(ph_set: dict, static_kwargs: dict):
    """The CP2K phonon flow of a reference: ``ph_set`` is ``settings["phonons"]`` (see :data:`SETTINGS`)."""
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.validation.phonons import Cp2kPhononMaker

    return Cp2kPhononMaker(
        displacement=ph_set["displacement"],
        phonon_displacement_maker=cp2k_static_maker(kpoints=tuple(ph_set["kpoints"]), name="cp2k phonon static",
                                                    **static_kwargs),
        generate_frequencies_eigenvectors_kwargs={"npoints_band": ph_set["npoints_band"]},
    )


def compute(workdir: Path, make_cell=None, settings: dict | None = None, static_kwargs: dict | None = None,
            phase: str = "diamond") -> dict:
    """Run both CP2K flows in ``workdir`` and return the reference document.

    ``make_cell(a)``: the 8-atom conventional cubic cell at lattice constant ``a`` (Å) as a pymatgen
    Structure (default diamond Si); ``settings``: the form of :data:`SETTINGS`; ``static_kwargs``: further
    ``cp2k_static_maker`` arguments (basis sets, cutoff) for both the E-V points and the displaced cells.
    """
    from jobflow.core.reference import find_and_resolve_references

    from pfd_atomate.cli.demo import diamond_si
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.validation.eos import cp2k_eos_maker, fit_eos

    make_cell, settings, static_kwargs = make_cell or diamond_si, settings or SETTINGS, static_kwargs or {}
    out: dict = {"settings": settings}
    eos_set, ph_set = settings["eos"], settings["phonons"]
    start = time.perf_counter()
    flow = cp2k_eos_maker(cp2k_static_maker(kpoints=tuple(eos_set["kpoints"]), **static_kwargs),
                          tuple(eos_set["linear_strain"]), eos_set["number_of_frames"]).make(make_cell(eos_set["start_a"]))
    store = _run(flow, workdir / "eos")
    curve = find_and_resolve_references(flow.output["relax"], store)  # the flow's output is a dict of references
    fit = fit_eos(curve["volume"], curve["energy"], 8, phase, "CP2K")
    a0 = float((fit.v0 * 8) ** (1 / 3))
    out["eos"] = {"volumes": curve["volume"], "energies": curve["energy"], "fit": fit.model_dump(), "a0": a0,
                  "wall_s": time.perf_counter() - start}
    print(f"CP2K {phase}: a0 {a0:.4f} Å, B0 {fit.b0:.1f} GPa ({out['eos']['wall_s']:.0f} s)", flush=True)

    start = time.perf_counter()
    flow = _phonon_maker(ph_set, static_kwargs).make(make_cell(a0), supercell_matrix=ph_set["supercell_matrix"])
    store = _run(flow, workdir / "phonons")
    doc = store.get_output(flow.output.uuid, load=True)
    bands = np.asarray(doc["phonon_bandstructure"]["bands"])
    # the displaced cells are jobs made at run time: count their outputs in the store
    n_displacements = store.count({"name": {"$regex": "^cp2k phonon static"}})
    out["phonons"] = {"band_structure": doc["phonon_bandstructure"], "n_displacements": n_displacements,
                      "max_frequency_thz": float(bands.max()), "min_frequency_thz": float(bands.min()),
                      "wall_s": time.perf_counter() - start}
    print(f"CP2K {phase} phonons: max {bands.max():.2f} THz, min {bands.min():.3f} THz "
          f"({out['phonons']['wall_s']:.0f} s)", flush=True)
    return out


def reanalyse_phonons(ref: dict, workdir: Path, make_cell=None, static_kwargs: dict | None = None) -> dict:
    """``ref`` with its phonon bands analysed again from the CP2K forces kept in ``workdir / "phonons"`` (the
    store of :func:`compute`) by today's :class:`~pfd_atomate.validation.phonons.Cp2kPhononMaker` analysis
    (e.g. after ``remove_drift``), without running CP2K again.

    Raises
    ------
    LookupError: the store holds no displacement forces.
    """
    from jobflow.core.reference import find_and_resolve_references
    from monty.json import jsanitize

    from pfd_atomate.cli.demo import diamond_si
    from pfd_atomate.store import embedded_store
    from pfd_atomate.validation.phonons import forces_in_ev_per_angstrom

    ph_set = ref["settings"]["phonons"]
    store = embedded_store(workdir / "phonons")
    store.connect()
    # atomate2's store_inputs job gathers the displaced cells' outputs (as references into the store)
    raw = [find_and_resolve_references(d["output"], store) for d in store.query({"name": "store_inputs"}, load=True)]
    if not raw:
        raise LookupError(f"no CP2K displacement forces in {workdir / 'phonons'}")
    maker = _phonon_maker(ph_set, static_kwargs or {})
    flow = maker.make((make_cell or diamond_si)(ref["eos"]["a0"]), supercell_matrix=ph_set["supercell_matrix"])
    collect = next(j for j in flow.jobs if j.function.__name__ == "generate_frequencies_eigenvectors")
    kwargs = dict(collect.function_kwargs)
    kwargs["displacement_data"] = forces_in_ev_per_angstrom.original(raw[-1], remove_drift=maker.remove_drift)
    folder = workdir / "phonons-reanalysed"  # phonopy writes its files into the working directory
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        doc = collect.function(*collect.function_args, **kwargs)
    band_structure = jsanitize(doc.phonon_bandstructure.as_dict(), strict=True, enum_values=True)
    bands = np.asarray(band_structure["bands"])
    phonons = {**ref["phonons"], "band_structure": band_structure, "max_frequency_thz": float(bands.max()),
               "min_frequency_thz": float(bands.min()), "remove_drift": maker.remove_drift,
               "max_net_force_ev_per_a": float(max(np.abs(np.sum(f, axis=0)).max() for f in
                                                   forces_in_ev_per_angstrom.original(raw[-1])["forces"]))}
    return {**ref, "phonons": phonons}


PHASES_CACHE = DATA / "si_phases_cp2k_eos.json.gz"


def phases_cache(kpoint_density: float | None = None) -> Path:
    """Cache of the phase E-V curves: β-Sn and BC8 at 4x4x4 (``None``), or all three phases on the meshes of
    a CP2K k-point density (k-points/Å⁻³, ``multi_phase.py``'s labeller)."""
    return PHASES_CACHE if kpoint_density is None else DATA / f"si_phases_cp2k_eos_kd{kpoint_density:g}.json.gz"


def load_phases(kpoint_density: float | None = None) -> dict | None:
    """The cached phase E-V document (settings, phases), or ``None`` when it was never computed."""
    path = phases_cache(kpoint_density)
    return json.loads(gzip.decompress(path.read_bytes())) if path.exists() else None


def phase_eos(workdir: Path, kpoint_density: float | None = None) -> dict:
    """CP2K E-V curves per phase, fitted; phase → points, k-mesh, fit, wall time.

    Without ``kpoint_density``: β-Sn and BC8 at 4x4x4 (their first held-out sets' mesh). With it: diamond,
    β-Sn and BC8, each on the mesh the density gives its 8-atom cell, held fixed over the strains (as a PFD
    run keeps one mesh per input structure).
    """
    from jobflow.core.reference import find_and_resolve_references
    from pymatgen.io.ase import AseAtomsAdaptor

    from _common import density_kpoints, si_phase
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.validation.eos import cp2k_eos_maker, fit_eos

    eos_set = SETTINGS["eos"]
    phases = ("beta-Sn", "bc8") if kpoint_density is None else ("diamond", "beta-Sn", "bc8")
    out = {}
    for phase in phases:
        kpoints = (4, 4, 4) if kpoint_density is None else density_kpoints(phase, kpoint_density)
        start = time.perf_counter()
        structure = AseAtomsAdaptor.get_structure(si_phase(phase))
        flow = cp2k_eos_maker(cp2k_static_maker(kpoints=kpoints), tuple(eos_set["linear_strain"]),
                              eos_set["number_of_frames"]).make(structure)
        curve = find_and_resolve_references(flow.output["relax"], _run(flow, workdir / phase))
        fit = fit_eos(curve["volume"], curve["energy"], len(structure), phase, "CP2K")
        out[phase] = {"kpoints": list(kpoints), "volumes": curve["volume"], "energies": curve["energy"],
                      "fit": fit.model_dump(), "wall_s": time.perf_counter() - start}
        print(f"CP2K {phase} ({'x'.join(map(str, kpoints))}): V0 {fit.v0:.3f} Å^3/atom, E0 {fit.e0:.4f} eV/atom, "
              f"B0 {fit.b0:.1f} GPa ({out[phase]['wall_s']:.0f} s)", flush=True)
    return out


def main(argv: list[str]) -> dict:
    density = float(argv[argv.index("--kpoint-density") + 1]) if "--kpoint-density" in argv else None
    cache = phases_cache(density)
    if "--phases" in argv and (not cache.exists() or "--recompute" in argv):
        from _dft_labels import label_workdir

        folder = "cp2k-reference-phases" + (f"-kd{density:g}" if density else "")
        phases = phase_eos(label_workdir() / folder, density)
        settings = {**SETTINGS["eos"], "kpoints": {p: d["kpoints"] for p, d in phases.items()},
                    "kpoint_density": density, "cells": "_common.si_phase"}
        doc = {"settings": settings, "phases": phases}
        with gzip.open(cache, "wt") as fh:
            json.dump(doc, fh)
        print(f"wrote {cache}")
        if density is not None:
            return doc
    if CACHE.exists() and "--recompute" not in argv:
        ref = load_reference()
        print(f"cached: {CACHE.name} (a0 {ref['eos']['a0']:.4f} Å); --recompute to run CP2K again")
        return ref
    from _dft_labels import label_workdir

    ref = compute(label_workdir() / "cp2k-reference")
    DATA.mkdir(exist_ok=True)
    with gzip.open(CACHE, "wt") as fh:
        json.dump(ref, fh)
    print(f"wrote {CACHE}")
    return ref


if __name__ == "__main__":
    main(sys.argv[1:])
