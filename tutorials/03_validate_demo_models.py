"""Tutorial 3: validate the models of a finished PFD run beyond RMSEs.

After ``bash scripts/demo.sh`` (or any PFD run of the local engine), this script reads the teacher
(fine-tuned DPA-4) and the distilled student (DeePMD se_e2_a) back from the run's JobStore with
``pfd_atomate.queries`` (the newest finished run for Si), and compares them the way a user would before trusting
the student in production MD:

1. parity of both models against the held-out DFT frames (energy per atom, force components);
2. energy-volume curve of diamond Si, student against teacher (Birch-Murnaghan V0, B0), by
   atomate2's force-field EOS flow;
3. phonon band structure of diamond Si by atomate2's force-field phonon flow (phonopy finite
   displacements), student against teacher, with the band RMSE in THz (the autoplex SI's measure);
4. NVE stability of each model on a 64-atom cell at 600 K: energy drift (eV/atom/ps) and the
   shortest pair distance.

The teacher is the reference in 2 and 3 because it is the model the student was distilled from
(the CP2K reference of diamond Si is ``benchmarks/cp2k_reference.py``; ``benchmarks/properties.py``
compares both models with it). 2, 3 and 4 are the Makers of ``pfd_atomate.validation.jobs`` run by
``run_locally`` in ``<run-dir>/validation/jobs`` (see docs/validation.md); figures and
``validation.json`` go to ``<run-dir>/validation/``.

Usage: ``.venv/bin/python tutorials/03_validate_demo_models.py [runs/demo-si]``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pfd_atomate.cli.demo import diamond_si
from pfd_atomate.cli.report import backend_for
from pfd_atomate.queries import final_model, latest_run
from pfd_atomate.store import fetch_dataset
from pfd_atomate.workflows.local import attach_run
from pfd_atomate.validation.jobs import CalculatorSpec, EOSValidationMaker, MDStabilityMaker, PhononValidationMaker
from pfd_atomate.validation.md_stability import MDStabilityResult, plot_md_stability
from pfd_atomate.validation.parity import parity_plot


def run_validation(flow, out: Path) -> dict:
    """Run a validation flow (atomate2's jobs inside) in ``out/jobs``; its output document, PNG written to ``out``."""
    import base64

    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, root_dir=out / "jobs", create_folders=True, ensure_success=True, log=False)
    doc = store.get_output(flow.output.uuid, load=True)
    (out / f"{doc['kind']}.png").write_bytes(base64.b64decode(doc["plot_png"]))
    return doc["result"]


def main(run_dir: Path) -> dict:
    with attach_run(run_dir) as (store, _, _):
        try:  # the newest finished run for Si in this store, and its models (SHA-256 checked)
            doc = latest_run(store, "Si")["output"]
            teacher, student = final_model(store, "Si", "teacher"), final_model(store, "Si", "student")
        except LookupError as err:
            raise SystemExit(f"{err} ({run_dir}): did the PFD run finish?") from None
        held_out = doc["datasets"]["held_out_dft"]
        dft = fetch_dataset(store, held_out["job_uuid"], held_out["field"])
    # one thread each: the machine may be shared
    teacher_backend, student_backend = backend_for(teacher.backend), backend_for(student.backend)
    out = run_dir / "validation"
    out.mkdir(exist_ok=True)
    result: dict = {"run": str(run_dir), "teacher_sha256": teacher.sha256, "student_sha256": student.sha256}
    start = time.perf_counter()

    parity_plot(dft, {"teacher (PF)": teacher_backend.predict(teacher, dft),
                      "student (PFD)": student_backend.predict(student, dft)},
                out / "parity.png", title=f"held-out CP2K frames ({len(dft)})", reference_name="CP2K")

    si = diamond_si()
    t_spec = CalculatorSpec.from_model(teacher, teacher_backend, name="teacher")
    s_spec = CalculatorSpec.from_model(student, student_backend, name="student")
    try:
        eos = run_validation(EOSValidationMaker().make({"diamond": si}, s_spec, t_spec), out)
        t_fit, s_fit = eos["reference"]["diamond"], eos["model"]["diamond"]
        result["eos"] = {"v0_error_percent": eos["v0_error_percent"]["diamond"],
                         "b0_error_gpa": eos["b0_error_gpa"]["diamond"],
                         "teacher_v0": t_fit["v0"], "teacher_b0_gpa": t_fit["b0"],
                         "student_v0": s_fit["v0"], "student_b0_gpa": s_fit["b0"]}
    except RuntimeError as err:  # e.g. no minimum within ±12 % volume: a failed check, not a crash
        result["eos"] = {"failed": str(err)}

    phonons = run_validation(PhononValidationMaker().make(si, s_spec, t_spec), out)
    result["phonons"] = {k: phonons[k] for k in ("band_rmse", "max_abs_error", "min_frequency", "gamma_acoustic_max")}

    cell = si.copy()
    cell.make_supercell([2, 2, 2])  # 64 atoms
    nve = MDStabilityMaker(n_steps=1000, time_step=1.0, temperature=600.0, seed=0)  # atomate2's NVE + our analysis
    md = {spec.name: MDStabilityResult(**run_validation(nve.make(cell, spec), out)) for spec in (t_spec, s_spec)}
    plot_md_stability(md, out / "md_stability.png")  # both models in one figure (replaces each run's own)
    result["md_stability"] = {name: {"stable": r.stable, "reason": r.reason,
                                     "energy_drift_ev_per_atom_ps": r.energy_drift,
                                     "min_pair_distance": r.min_pair_distance} for name, r in md.items()}
    result["wall_s"] = time.perf_counter() - start
    (out / "validation.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"figures and validation.json in {out}")
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo-si"))
