"""Does the fine-tune's loss weighting cause the per-phase energy bias of a multi-phase PF model?

The multi-phase run (``multi_phase.py``, diamond + β-Sn + BC8 Si) converged in forces but not in energies:
its teacher put β-Sn about 15 meV/atom too low against diamond in every iteration, and six iterations of
added labels did not move that. With one element the re-fitted energy bias (``DeepMDBackend.refit_bias``)
is one constant per atom, so it cannot shift one phase against another; only the trained network can.

deepmd-kit's loss prefactors follow the learning rate from ``start_pref`` to ``limit_pref``. That run
fine-tuned with deepmd-kit's energy 0.02 → 1 and forces 1000 → 1 (virial as energy) and the learning rate
1e-5 → 1e-6 (``presets.DPA4_LEARNING_RATE``), so it ended at energy 0.9 against forces 101: a phase energy
error of 15 meV/atom cost the 8-atom loss less than a force error of 0.004 eV/Å.

This script fine-tunes DPA-4 (``dpa4-neo``) once from the pretrained model on all of a run's DFT labels
with each ``DeepMDBackend.energy_weight`` below (a factor on the energy and virial prefactors), and tests every model on the independent held-out sets of
``held_out_phases.py`` (per phase: energy RMSE raw and with the model's mean offset on that phase removed,
force RMSE, and the phase energy error: the mean energy offset on a phase minus that on diamond). The
run's own teacher (fine-tuned iteration by iteration) and the zero-shot DPA-4 are tested beside them.

Usage: ``.venv/bin/python benchmarks/finetune_weights.py --run RUN_DIR [--kpoint-density 300]
[--variants ...] [--parallel 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _common import environment, save

RESULTS = Path(__file__).resolve().parent / "results"

#: DeepMDBackend fields of each variant, over ``presets.dpa4_teacher`` (whose ``energy_weight`` has been 100 since
#: this benchmark; it was 1, deepmd-kit's weighting, in the run it tests)
VARIANTS: dict[str, dict[str, Any]] = {
    "energy weight 1 (deepmd-kit's)": {"energy_weight": 1.0},
    "energy weight 10": {"energy_weight": 10.0},
    "energy weight 30": {"energy_weight": 30.0},
    "energy weight 100": {"energy_weight": 100.0},
    "energy weight 300": {"energy_weight": 300.0},
    "energy weight 1, 4x steps": {"energy_weight": 1.0, "steps_per_frame": 40.0},
    "energy weight 100, 4x steps": {"energy_weight": 100.0, "steps_per_frame": 40.0},
}


def run_labels(run_dir: Path):
    """Every DFT-labelled dataset of a run, in the order it was paid for (initial, then each iteration)."""
    from pfd_atomate.store import fetch_dataset
    from pfd_atomate.workflows.local import attach_run

    with attach_run(run_dir) as (store, _, _):
        docs = list(store.docs_store.query({"metadata.pfd_step": "label", "name": "pfd label collect"},
                                           properties=["uuid", "metadata"]))
        docs.sort(key=lambda d: (d["metadata"].get("label_set") != "initial", d["metadata"].get("iteration", -1)))
        return [fetch_dataset(store, d["uuid"]) for d in docs]


def phase_metrics(backend, model, sets: dict) -> dict:
    """Per phase: RMSEs and the mean energy offset (eV/atom); then each phase's offset minus diamond's."""
    from pfd_atomate.data import Dataset

    out = {}
    for phase, kinds in sets.items():
        data = Dataset.concat(list(kinds.values()), name=phase)
        pred = backend.predict(model, data)
        de = pred.energies_per_atom() - data.energies_per_atom()
        df = np.concatenate([np.asarray(p.forces) - np.asarray(r.forces) for p, r in zip(pred.frames, data.frames)])
        out[phase] = {"n_frames": len(data), "energy_rmse_ev_per_atom": float(np.sqrt(np.mean(de ** 2))),
                      "energy_rmse_offset_removed_ev_per_atom": float(np.std(de)),
                      "mean_energy_offset_ev_per_atom": float(np.mean(de)),
                      "force_rmse_ev_per_a": float(np.sqrt(np.mean(df ** 2)))}
    for phase in out:
        out[phase]["phase_energy_error_ev_per_atom"] = (out[phase]["mean_energy_offset_ev_per_atom"]
                                                        - out["diamond"]["mean_energy_offset_ev_per_atom"])
    return out


def main() -> None:
    from held_out_phases import held_out_sets

    from pfd_atomate import queries
    from pfd_atomate.data import ModelFile
    from pfd_atomate.presets import dpa4_teacher
    from pfd_atomate.workflows.local import attach_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished multi-phase PFD run folder")
    parser.add_argument("--kpoint-density", type=float, default=300.0,
                        help="held-out sets on this density's meshes (the run's labeller's; see held_out_phases.py)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=2, help="fine-tunes at once (one thread each)")
    parser.add_argument("--tag", default="", help="suffix of the result file (invocations with other --variants)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the fine-tuned models here (default: a temporary folder)")
    args = parser.parse_args()

    sets = held_out_sets(argparse.Namespace(kpoint_density=args.kpoint_density, procs=1, rattled=8,
                                            temperatures=[300.0, 900.0], per_temperature=4, seed=4242))
    labels = run_labels(args.run)
    n_labels = sum(len(d) for d in labels)
    with attach_run(args.run) as (store, _, _):
        run_teacher = queries.final_model(store, "Si", "teacher")
    base = dpa4_teacher(n_threads=1)
    result: dict[str, Any] = {
        "benchmark": "finetune_weights", "run": str(args.run.resolve()), "n_dft_labels": n_labels,
        "held_out": {p: {k: len(d) for k, d in kinds.items()} for p, kinds in sets.items()},
        "kpoint_density": args.kpoint_density, "environment": environment(1), "models": {},
    }
    zero_shot = ModelFile.from_path(base.base_model_path(), backend="deepmd")
    for name, model in (("DPA-4 zero-shot", zero_shot), ("the run's teacher (6 iterations)", run_teacher)):
        result["models"][name] = {"held_out": phase_metrics(base, model, sets)}

    def train(name: str):
        backend = dpa4_teacher(n_threads=1, **VARIANTS[name])
        start = time.perf_counter()
        model = backend.train(labels, Path(tmp) / name.replace(" ", "_").replace(",", ""))
        return name, backend, model, time.perf_counter() - start

    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(args.parallel) as pool:
        tmp = args.workdir or scratch
        for name, backend, model, wall in pool.map(train, args.variants):
            row = {"settings": VARIANTS[name], "steps": backend.training_steps(n_labels), "train_wall_s": round(wall, 1),
                   "model": str(model.materialize(Path(tmp) / "models" / name.replace(" ", "_"))) if args.workdir else None,
                   "held_out": phase_metrics(backend, model, sets)}
            result["models"][f"fine-tuned, {name}"] = row
            print(name, f"{row['steps']} steps, {wall:.0f} s", {p: (round(1000 * m["phase_energy_error_ev_per_atom"], 1),
                  round(1000 * m["energy_rmse_offset_removed_ev_per_atom"], 1), round(m["force_rmse_ev_per_a"], 4))
                  for p, m in row["held_out"].items()}, flush=True)
    for name, row in result["models"].items():
        if "steps" not in row:
            print(name, {p: (round(1000 * m["phase_energy_error_ev_per_atom"], 1), round(m["force_rmse_ev_per_a"], 4))
                         for p, m in row["held_out"].items()})
    save(f"finetune_weights{'_' + args.tag if args.tag else ''}", result, RESULTS)
    print(json.dumps({n: {p: round(1000 * m["phase_energy_error_ev_per_atom"], 1) for p, m in r["held_out"].items()}
                      for n, r in result["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
