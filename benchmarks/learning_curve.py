"""A fair learning curve: fine-tuned DPA-4 vs the same architecture from scratch vs DeePMD from scratch (PFD Fig. 2).

The paper's claim: a model fine-tuned on 100 DFT labels beats one trained from scratch on 1000. Here the
three models below are trained on the first N labels of the benchmarks' CP2K Si8 pool (N in ``--sizes``,
default 10, 40, 160; PBE, 3x3x3 k-points, strained ±4 % and rattled 0.05-0.2 Å cells) and tested on the
independent held-out CP2K sets of diamond Si: 39 strained + rattled cells and 30 MD frames (300 / 900 /
1500 K), both made apart from the pool (other seeds, other generator for the MD frames).

- **PF**: DPA-4 (``dpa4-neo``) fine-tuned with the project's settings (``presets.dpa4_teacher``: learning
  rate 1e-5 to 1e-6, batch 1, energy bias re-fitted);
- **DPA-4 architecture from scratch**: the checkpoint's own model definition with random weights
  (``dp --pt train`` without ``--finetune``), learning rate 1e-3 to 1e-5 (deepmd-kit's from-scratch default);
- **DeePMD se_e2_a from scratch**: the distillation student's descriptor (rcut 6 Å), learning rate 1e-3 to 1e-5.

**Budget rule**: every model at a given N gets the same training: ``max(400, 10 N)`` steps of one frame
(the project's fine-tuning rule), the same seed and the same loss (energy, forces, virial). Each model
keeps the learning rate its own training normally uses, since a from-scratch model at the fine-tuning rate
(1e-5) barely moves. Equal budgets favour the fine-tuned model, which needs few steps; ``--long-steps S``
trains the two from-scratch models again with S steps at every N (``--long-sizes``), to see how much of the
gap is training length. The summary gives, for each N of PF, the fewest labels with which each scratch model
reaches PF's held-out force RMSE (``>`` the largest N when none does).

Usage: ``.venv/bin/python benchmarks/learning_curve.py [--sizes 10 40 160] [--workdir DIR]``; every
finished training's metrics are kept in the workdir, so a rerun continues where it stopped. One thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np

from _common import environment, pyplot, save, save_figure

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("PF (DPA-4 fine-tuned)", "DPA-4 architecture from scratch", "DeePMD se_e2_a from scratch")
TAGS = dict(zip(MODELS, ("pf", "dpa4-scratch", "se_e2_a-scratch"), strict=True))
#: the from-scratch models again with a long fixed budget (``--long-steps``): does more training close the gap?
LONG = {name: f"{name}, long budget" for name in MODELS[1:]}
SCRATCH_LR = (1e-3, 1e-5)


def backends(long_steps: int = 0):
    """The three trainer backends, one thread each, same seed and step rule; with ``long_steps`` also the two
    from-scratch models with that many steps at every N (:data:`LONG`)."""
    from pfd_atomate.presets import dpa4_teacher
    from pfd_atomate.train.deepmd import DeepMDBackend, _branch_params

    class Dpa4FromScratch(DeepMDBackend):
        """DPA-4's model definition with random weights: the checkpoint's ``model`` section, no ``--finetune``."""

        def model_definition(self, start, init_model):
            params = copy.deepcopy(_branch_params(DeepMDBackend(base_model="dpa4-neo").base_model_path(), None))
            params["use_compile"] = False
            params.pop("info", None)  # the pretrained model's observed types
            return params

    rule = {"numb_steps": 400, "steps_per_frame": 10.0, "batch_size": 1, "seed": 1, "n_threads": 1, "device": "cpu"}
    scratch = rule | {"start_lr": SCRATCH_LR[0], "stop_lr": SCRATCH_LR[1]}
    made = {MODELS[0]: dpa4_teacher(**rule),
            MODELS[1]: Dpa4FromScratch(template="se_e2_a", **scratch),
            MODELS[2]: DeepMDBackend(template="se_e2_a", rcut=6.0, rcut_smth=0.5, compress=False, **scratch)}
    if long_steps:
        long = {"numb_steps": long_steps, "steps_per_frame": None}
        made[LONG[MODELS[1]]] = Dpa4FromScratch(template="se_e2_a", **(scratch | long))
        made[LONG[MODELS[2]]] = DeepMDBackend(template="se_e2_a", rcut=6.0, rcut_smth=0.5, compress=False,
                                              **(scratch | long))
    return made


def rmse(reference, predicted) -> dict:
    """Energy RMSE (meV/atom; raw and with the mean offset removed) and force RMSE (eV/Å)."""
    from pfd_atomate.evaluate.metrics import frame_errors

    err = frame_errors(reference, predicted)
    return {"n_frames": err.n_frames, "energy_rmse_mev_per_atom": 1e3 * err.energy_rmse,
            "energy_rmse_offset_removed_mev_per_atom": 1e3 * err.energy_rmse_offset_removed,
            "force_rmse_ev_per_a": err.force_rmse}


def labels_to_reach(sizes, values, target) -> int | None:
    """The smallest N whose value is <= ``target`` (None when none is)."""
    return next((n for n, v in zip(sizes, values, strict=True) if v is not None and v <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 40, 160])
    parser.add_argument("--long-steps", type=int, default=0,
                        help="also train the scratch models with this many steps at every N (0: not)")
    parser.add_argument("--long-sizes", type=int, nargs="+", default=None, help="N for the long budget (default --sizes)")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "pfd_atomate" / "learning-curve")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from _dft_labels import si_pool_and_held_out
    from held_out_md import md_held_out

    from pfd_atomate.data import Dataset, ModelFile
    from pfd_atomate.train.deepmd import DeepMDBackend

    start = time.perf_counter()
    pool, rattled, data_meta = si_pool_and_held_out()
    md, _ = md_held_out([300.0, 900.0, 1500.0], 10, 2026)
    tests = {"rattled": rattled, "md": md, "all": Dataset.concat([rattled, md], name="held-out")}
    args.workdir.mkdir(parents=True, exist_ok=True)

    evaluator = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    zero_shot = ModelFile.from_path(evaluator.base_model_path(), backend="deepmd")
    results: dict = {"DPA-4 zero-shot": {"0": {k: rmse(d, evaluator.predict(zero_shot, d)) for k, d in tests.items()}}}
    for name, backend in backends(args.long_steps).items():
        results[name] = {}
        long = name in LONG.values()
        for n in (args.long_sizes or args.sizes) if long else args.sizes:
            tag = f"{TAGS[name.removesuffix(', long budget')]}{f'-long{args.long_steps}' if long else ''}-n{n}"
            cached = args.workdir / f"{tag}.json"
            if cached.exists():
                results[name][str(n)] = json.loads(cached.read_text())
                continue
            t0 = time.perf_counter()
            model = backend.train([pool.subset(range(n), name=f"pool-{n}")], args.workdir / tag)
            wall = time.perf_counter() - t0
            row = {k: rmse(d, backend.predict(model, d)) for k, d in tests.items()}
            row |= {"train_wall_s": wall, "steps": backend.training_steps(n), "batch_size": 1}
            cached.write_text(json.dumps(row))
            results[name][str(n)] = row
            print(name, n, {k: round(v["force_rmse_ev_per_a"], 4) for k, v in row.items() if isinstance(v, dict)},
                  f"{wall:.0f} s", flush=True)

    sizes = list(args.sizes)
    force = {name: [results[name][str(n)]["all"]["force_rmse_ev_per_a"] for n in sizes] for name in MODELS}
    reach = {}
    for n, pf in zip(sizes, force[MODELS[0]], strict=True):
        reach[str(n)] = {}
        for name in [*MODELS[1:], *(v for v in LONG.values() if v in results)]:
            own = sorted(int(k) for k in results[name])
            needed = labels_to_reach(own, [results[name][str(k)]["all"]["force_rmse_ev_per_a"] for k in own], pf)
            reach[str(n)][name] = {"labels": needed if needed is not None else f">{own[-1]}",
                                   "ratio": None if needed is None else needed / n}
    payload = {"benchmark": "learning_curve", "environment": environment(1), "device": "cpu, 1 thread",
               "system": "diamond Si, 8-atom cells, CP2K PBE 3x3x3",
               "training_pool": data_meta, "held_out": {k: len(d) for k, d in tests.items()},
               "budget_rule": "max(400, 10 N) steps of batch 1 for every model at N labels; same seed and loss; "
                              "learning rate: PF 1e-5 to 1e-6 (presets.dpa4_teacher), scratch models 1e-3 to 1e-5",
               "long_budget_steps": args.long_steps or None,
               "sizes": sizes, "results": results, "scratch_labels_to_reach_pf_force_rmse": reach,
               "wall_time_s": time.perf_counter() - start}
    save("learning_curve", payload, RESULTS)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "force_rmse_ev_per_a", "force RMSE (eV/Å)"),
                           (axes[1], "energy_rmse_offset_removed_mev_per_atom", "energy RMSE, offset removed (meV/atom)")):
        for name in [*MODELS, *(v for v in LONG.values() if v in results)]:
            own = sorted(int(k) for k in results[name])
            ax.plot(own, [results[name][str(n)]["all"][key] for n in own], "o-" if name in MODELS else "s--",
                    label=name if name in MODELS else f"{name} ({args.long_steps} steps)")
        ax.axhline(results["DPA-4 zero-shot"]["0"]["all"][key], color="gray", ls="--", label="DPA-4 zero-shot")
        ax.set(xscale="log", yscale="log", xlabel="CP2K labels N", ylabel=label,
               title=f"held-out: {len(tests['all'])} CP2K Si8 frames")
    axes[0].legend(fontsize=8)
    save_figure(fig, RESULTS / "learning_curve.png")


if __name__ == "__main__":
    main()
