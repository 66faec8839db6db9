"""Data efficiency: held-out error vs number of training labels, fine-tuned vs from scratch (PFD Fig. 2).

PFD's promise (a): fine-tuning a pretrained foundation model needs far fewer labels than
training from scratch. Labels (``--labels``):
- ``cp2k`` (default): real DFT. 8-atom diamond Si cells (the PFD demo system), strained
  (±4 %) and rattled (σ 0.05-0.2 Å, cycled), labelled with CP2K PBE (DZVP-MOLOPT, GTH,
  3x3x3 k-points) through pfd-atomate's ``LabelMaker`` and atomate2's CP2K ``StaticMaker``.
  200 frames; pfd-atomate's default frame filter drops one non-physical frame (a 1.28 Å pair, which
  made every DeePMD training that saw it diverge); the first 160 are the training pool, the last 39
  the held-out set. Labelling
  takes about 30 min on two cores, so the labelled frames are cached in ``benchmarks/data/``
  (committed; ``--relabel`` labels afresh);
- ``emt``: ASE's EMT for 8-atom fcc Cu (not DFT; labels in milliseconds), strain ±3 %,
  rattle σ 0.1 Å, held-out: 40 frames with another seed.

Models trained on the same first N labels, N in 10, 20, 40, 80, 160 (``--quick``: 10, 40):
- "CHGNet fine-tuned": pretrained CHGNet 0.3.0, per-element energies re-referenced, then
  fine-tuned (embeddings frozen, lr 1e-3);
- "CHGNet from scratch": the same architecture with random weights, every layer trained
  (lr 3e-3), the same training length;
- "DeePMD se_e2_a from scratch": the student architecture of the distillation step
  (1500 steps, lr 3e-3 decaying to 1e-5, energy + forces + virial);
- "CHGNet pretrained, re-referenced only": zero gradient steps (how far re-fitting the
  per-element energies alone gets).

CHGNet trainings see max(400, 10 N) frames (``--quick``: 40): at least 400 frames at
every N, so small N is not starved, and at least 10 epochs, so large N is not cut off
after two passes (with a fixed 400 the fine-tuned error stopped falling past N = 20).
Both CHGNet variants get the same budget at each N. The batch size is N / 10 (1 to 4), so
every epoch has at least 10 batches: chgnet's Trainer steps its cosine learning-rate
schedule at tenths of an epoch and would otherwise decay the rate only partly for small N.
The trainings are short compared with the paper: the models are compared at equal, small
compute, which is where fine-tuning's head start shows most.

Usage: ``python benchmarks/data_efficiency.py [--quick] [--threads 2] [--labels cp2k|emt] [--relabel]``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Timer, emt_cu_frames, environment, parse_args, pyplot, save, save_figure

#: what the labels are, per --labels choice (JSON, plot)
LABELS = {
    "cp2k": ("CP2K PBE (DFT) for diamond Si: 8-atom cells, strain ±4 %, rattle σ 0.05-0.2 Å; DZVP-MOLOPT-SR-GTH, "
             "GTH-PBE-q4, 300 Ry, 3x3x3 k-points; FrameFilter() drops 1 of 200; pool: first 160, "
             "held-out: the other 39",
             "CP2K PBE Si frames, 8 atoms", "labels: CP2K PBE"),
    "emt": ("ASE EMT for fcc Cu (NOT DFT): 8-atom cells, strain ±3 %, rattle σ 0.1 Å; "
            "held-out: 40 frames of the same distribution (other seed)", "EMT Cu frames, 8 atoms",
            "labels: EMT, not DFT"),
}


def load_labels(kind: str, n_pool: int, relabel: bool) -> tuple:
    """(training pool, held-out set, metadata) for ``--labels kind``."""
    if kind == "emt":
        return emt_cu_frames(n_pool, seed=1), emt_cu_frames(40, seed=999), {}
    from _dft_labels import si_pool_and_held_out

    return si_pool_and_held_out(relabel)


def random_chgnet_checkpoint(path: Path, seed: int) -> Path:
    """A CHGNet with the pretrained model's architecture and random weights, saved for ``CHGNetBackend``."""
    import torch
    from chgnet.model import CHGNet

    from pfd_atomate.train.chgnet import PRETRAINED_VERSION

    pretrained = CHGNet.load(model_name=PRETRAINED_VERSION, use_device="cpu", verbose=False)
    torch.manual_seed(seed)
    scratch = CHGNet(**pretrained.model_args)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": scratch.as_dict()}, path)
    return path


def labels_to_reach(sizes: list[int], rmse: list[float], target: float) -> int | None:
    """Fewest labels in the grid with force RMSE <= target (None: never reached)."""
    for n, r in zip(sizes, rmse):
        if r <= target:
            return n
    return None


def summarize(errors: dict[str, list[dict]], sizes: list[int]) -> dict:
    """Ratios that state PFD's claim (a), computed from the per-N errors.

    - ``force_rmse_ratio_scratch_over_finetuned`` (and energy): CHGNet from scratch ÷
      fine-tuned, per N;
    - ``finetuned_min_n_vs_best_scratch_max_n``: the best from-scratch model with the most
      labels ÷ the fine-tuned model with the fewest labels (ratio > 1: fine-tuned better);
    - ``labels_to_reach_target``: fewest labels with a force RMSE at or below the best
      from-scratch force RMSE at the largest N (``None``: not reached in the grid);
    - ``label_saving_factor``: largest N ÷ the labels the fine-tuned model needs for that
      target (a lower bound when it gets there with the smallest N).
    """
    scratch = ("CHGNet from scratch", "DeePMD se_e2_a from scratch")
    ft, sc = errors["CHGNet fine-tuned"], errors["CHGNet from scratch"]
    best = {q: min(errors[m][-1][q] for m in scratch) for q in ("energy_rmse", "force_rmse")}
    needed = {name: labels_to_reach(sizes, [r["force_rmse"] for r in rows], best["force_rmse"])
              for name, rows in errors.items()}
    n_ft = needed["CHGNet fine-tuned"]
    return {
        "force_rmse_ratio_scratch_over_finetuned": [s["force_rmse"] / f["force_rmse"] for s, f in zip(sc, ft)],
        "energy_rmse_ratio_scratch_over_finetuned": [s["energy_rmse"] / f["energy_rmse"] for s, f in zip(sc, ft)],
        "finetuned_min_n_vs_best_scratch_max_n": {
            "n_finetuned": sizes[0],
            "n_scratch": sizes[-1],
            "force_rmse_ratio": best["force_rmse"] / ft[0]["force_rmse"],
            "energy_rmse_ratio": best["energy_rmse"] / ft[0]["energy_rmse"],
        },
        "target_force_rmse": best["force_rmse"],
        "labels_to_reach_target": needed,
        "label_saving_factor": None if n_ft is None else sizes[-1] / n_ft,
        "label_saving_factor_is_lower_bound": n_ft == sizes[0],
    }


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = result["n_labels"]
    for name, rows in result["errors"].items():
        ax_e.plot(sizes, [1000 * r["energy_rmse"] for r in rows], "o-", label=name)
        ax_f.plot(sizes, [1000 * r["force_rmse"] for r in rows], "o-", label=name)
    for ax, what in ((ax_e, "energy RMSE (meV/atom)"), (ax_f, "force RMSE (meV/Å)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel(f"training labels ({LABELS[result['label_kind']][1]})")
        ax.set_ylabel(f"held-out {what}")
    handles, labels = ax_f.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)  # below the axes, off the data
    fig.suptitle("data efficiency: fine-tuned foundation model vs training from scratch "
                 f"({LABELS[result['label_kind']][2]})")
    save_figure(fig, path, rect=(0, 0.07, 1, 1))


def main() -> None:
    from pfd_atomate.evaluate.metrics import frame_errors
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    def extra(p) -> None:
        p.add_argument("--labels", choices=sorted(LABELS), default="cp2k", help="reference labels (default cp2k)")
        p.add_argument("--relabel", action="store_true", help="label the CP2K frames again, ignoring the cache")

    args = parse_args("held-out RMSE vs number of labels: fine-tuned vs scratch", extra)
    quick = args.quick
    sizes = [10, 40] if quick else [10, 20, 40, 80, 160]
    chgnet_frames = 40 if quick else 400  # least frames seen per CHGNet training (see the module docstring)
    min_epochs = 1 if quick else 10
    deepmd_steps = 300 if quick else 1500
    start = time.perf_counter()
    env = environment(args.threads)

    pool, test, label_meta = load_labels(args.labels, max(sizes), args.relabel)
    rcut = 5.0 if args.labels == "cp2k" else 4.5  # Si: the demo student's cut-off
    errors: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}

    def record(name: str, backend, model, wall: float, n: int) -> None:
        err = frame_errors(test, backend.predict(model, test))
        errors.setdefault(name, []).append({"n_labels": n, "energy_rmse": err.energy_rmse, "force_rmse": err.force_rmse})
        walls.setdefault(name, []).append(wall)
        print(f"N={n:4d} {name:40s} E {1000 * err.energy_rmse:8.2f} meV/atom  F {1000 * err.force_rmse:7.1f} meV/Å"
              f"  ({wall:.0f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PFD_MODEL_CACHE"] = str(Path(tmp) / "model-cache")  # keep the user's model cache clean
        tmp = Path(tmp)
        scratch_ckpt = random_chgnet_checkpoint(tmp / "chgnet-random" / "random.pth.tar", seed=0)
        for n in sizes:
            train = pool.subset(range(n), name=f"train-{n}")
            epochs = max(min_epochs, math.ceil(chgnet_frames / n))
            batch = max(1, min(4, n // 10))  # >= 10 batches per epoch (see the module docstring)
            runs = [
                ("CHGNet pretrained, re-referenced only", CHGNetBackend(epochs=0, n_threads=args.threads)),
                ("CHGNet fine-tuned", CHGNetBackend(epochs=epochs, batch_size=batch, learning_rate=1e-3,
                                                    n_threads=args.threads, seed=0)),
                ("CHGNet from scratch", CHGNetBackend(epochs=epochs, batch_size=batch, learning_rate=3e-3,
                                                      base_model=str(scratch_ckpt), freeze_embedding=False,
                                                      n_threads=args.threads, seed=0)),
                ("DeePMD se_e2_a from scratch", DeepMDBackend(template="se_e2_a", numb_steps=deepmd_steps, start_lr=3e-3,
                                                              rcut=rcut, rcut_smth=0.5, seed=0, n_threads=args.threads)),
            ]
            for name, backend in runs:
                with Timer() as t:
                    model = backend.train([train], tmp / f"{name.split()[0]}-{n}-{len(walls.get(name, []))}")
                record(name, backend, model, t.seconds, n)

    forces = np.concatenate([np.ravel(f.forces) for f in test.frames])
    result = {
        "benchmark": "data_efficiency",
        "mode": "quick" if quick else "full",
        "label_kind": args.labels,
        "labels": LABELS[args.labels][0],
        "label_generation": label_meta,
        "n_labels": sizes,
        "settings": {"chgnet_frames_per_training": f"max({chgnet_frames}, {min_epochs} N)",
                     "chgnet_batch": "min(4, N // 10)",
                     "chgnet_lr": {"fine-tuned": 1e-3, "scratch": 3e-3}, "deepmd_steps": deepmd_steps,
                     "deepmd": f"se_e2_a, rcut {rcut} Å, start_lr 3e-3, virial trained"},
        "label_force_rms": float(np.sqrt(np.mean(forces**2))),
        "label_energy_std_per_atom": float(np.std(test.energies_per_atom())),
        "errors": errors,
        "training_wall_s": walls,
        **summarize(errors, sizes),
        "wall_s": time.perf_counter() - start,
        "environment": env,
    }
    print("force RMSE scratch/fine-tuned per N: "
          + ", ".join(f"{n}: {x:.1f}x" for n, x in zip(sizes, result["force_rmse_ratio_scratch_over_finetuned"])))
    print(f"labels to reach {1000 * result['target_force_rmse']:.0f} meV/Å: {result['labels_to_reach_target']}; "
          f"fine-tuned at N={sizes[0]} vs best scratch at N={sizes[-1]}: "
          f"{result['finetuned_min_n_vs_best_scratch_max_n']}")
    save("data_efficiency", result, args.out)
    plot(result, args.out / "data_efficiency.png")


if __name__ == "__main__":
    main()
