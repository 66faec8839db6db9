"""Foundation models on the same CP2K Si8 labels: zero-shot and fine-tuned at 10 / 40 / 160 labels.

Which "P" should PFD start from? Measured on the benchmarks' CP2K PBE Si8 set (``_dft_labels.py``:
160 training frames, 39 held-out frames, strained ±4 % and rattled σ 0.05-0.2 Å):

- **DPA-4** (``dpa4-neo``, deepmd-kit, fetched from PyPI): zero-shot, and fine-tuned with the default
  teacher settings of :func:`pfd_atomate.presets.dpa4_teacher` (batch of one frame, lr 1e-5 -> 1e-6,
  energy bias re-fitted after training);
- **CHGNet** 0.3.0 (in its wheel): zero-shot (raw and with re-fitted per-element energies), and
  fine-tuned (embeddings frozen, lr 1e-3, the demo's settings);
- **SevenNet-0** (in its wheel): zero-shot only (pfd-atomate has no SevenNet trainer).

Budget rule, the same for both trainers: a training at N labels sees max(400, 10 N) frames
(DPA-4: that many steps of one frame; CHGNet: ceil(max(400, 10 N) / N) epochs of N frames in
batches of min(4, N // 10)). Zero-shot energies sit on another reference than CP2K's (DPA-4 and
SevenNet: ~101.7 eV/atom apart): their energy RMSE is also given with the mean offset removed.

Usage: ``python benchmarks/foundation_models.py [--quick] [--threads 1]``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Timer, environment, parse_args, pyplot, save, save_figure


def errors_of(test, pred) -> dict[str, float]:
    """Energy RMSE (eV/atom; also with the mean offset removed) and force RMSE (eV/Å)."""
    from pfd_atomate.evaluate.metrics import frame_errors

    err = frame_errors(test, pred)
    return {"energy_rmse": err.energy_rmse, "energy_rmse_offset_removed": err.energy_rmse_offset_removed,
            "force_rmse": err.force_rmse}


def sevennet_predictions(test, threads: int):
    """SevenNet-0 energies/forces on ``test`` (ASE calculator from the sevenn wheel)."""
    import torch
    from sevenn.calculator import SevenNetCalculator

    from pfd_atomate.data import Dataset, Frame

    torch.set_num_threads(threads)
    calc = SevenNetCalculator("7net-0", device="cpu")
    frames = []
    for atoms in test.to_atoms_list(with_labels=False):
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        frames.append(Frame.from_atoms(atoms))
    return Dataset(frames=frames)


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = result["n_labels"]
    for name, rows in result["fine_tuned"].items():
        ax_e.plot(sizes, [1000 * r["energy_rmse"] for r in rows], "o-", label=f"{name} fine-tuned")
        ax_f.plot(sizes, [1000 * r["force_rmse"] for r in rows], "o-", label=f"{name} fine-tuned")
    for k, (name, row) in enumerate(result["zero_shot"].items()):
        style = {"ls": "--", "color": f"C{k + 2}"}
        ax_e.axhline(1000 * row["energy_rmse_offset_removed"], label=f"{name} zero-shot (offset removed)", **style)
        ax_f.axhline(1000 * row["force_rmse"], label=f"{name} zero-shot", **style)
    for ax, what in ((ax_e, "energy RMSE (meV/atom)"), (ax_f, "force RMSE (meV/Å)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("CP2K training labels (Si8)")
        ax.set_ylabel(f"39 held-out frames: {what}")
    handles, labels = ax_f.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"foundation models on CP2K PBE Si8 ({result['environment']['device']}, "
                 f"{result['environment']['threads']} thread(s))")
    save_figure(fig, path, rect=(0, 0.12, 1, 1))


def main() -> None:
    from _dft_labels import si_pool_and_held_out

    from pfd_atomate.data import ModelFile
    from pfd_atomate.presets import chgnet_teacher, dpa4_teacher
    from pfd_atomate.train.chgnet import CHGNetBackend

    args = parse_args("zero-shot and fine-tuned DPA-4 / CHGNet (and SevenNet-0 zero-shot) on CP2K Si8")
    sizes = [10] if args.quick else [10, 40, 160]
    min_frames = 40 if args.quick else 400
    start = time.perf_counter()
    env = environment(args.threads)
    pool, test, label_meta = si_pool_and_held_out()

    dpa4 = dpa4_teacher(n_threads=args.threads)
    chgnet = CHGNetBackend(epochs=0, n_threads=args.threads)
    zero_shot = {
        "DPA-4": errors_of(test, dpa4.predict(ModelFile.from_path(dpa4.base_model_path(), backend="deepmd"), test)),
        "CHGNet": errors_of(test, chgnet.predict(None, test)),
        "SevenNet-0": errors_of(test, sevennet_predictions(test, args.threads)),
    }
    fine_tuned: dict[str, list[dict]] = {"DPA-4": [], "CHGNet": []}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PFD_MODEL_CACHE"] = str(Path(tmp) / "model-cache")
        tmp = Path(tmp)
        with Timer() as t:
            model = chgnet.train([pool.subset(range(sizes[0]))], tmp / "chgnet-reref")
        zero_shot["CHGNet re-referenced"] = errors_of(test, chgnet.predict(model, test)) | {"wall_s": t.seconds}
        for n in sizes:
            train = pool.subset(range(n), name=f"train-{n}")
            frames_seen = max(min_frames, 10 * n)
            runs = {
                "DPA-4": dpa4_teacher(n_threads=args.threads, numb_steps=frames_seen, steps_per_frame=None),
                "CHGNet": chgnet_teacher(epochs=math.ceil(frames_seen / n), batch_size=max(1, min(4, n // 10)),
                                         n_threads=args.threads),
            }
            for name, backend in runs.items():
                with Timer() as t:
                    model = backend.train([train], tmp / f"{name}-{n}")
                row = {"n_labels": n, "frames_seen": frames_seen, **errors_of(test, backend.predict(model, test)),
                       "wall_s": t.seconds}
                fine_tuned[name].append(row)
                print(f"N={n:4d} {name:8s} E {1000 * row['energy_rmse']:7.2f} meV/atom  "
                      f"F {1000 * row['force_rmse']:6.1f} meV/Å  ({t.seconds:.0f} s)", flush=True)

    forces = np.concatenate([np.ravel(f.forces) for f in test.frames])
    result = {
        "benchmark": "foundation_models",
        "mode": "quick" if args.quick else "full",
        "labels": "CP2K PBE Si8 (benchmarks/data, 3x3x3 k-points); train: first N of the 160-frame pool; "
                  "test: the 39 held-out frames",
        "label_generation": label_meta,
        "label_force_rms": float(np.sqrt(np.mean(forces**2))),
        "n_labels": sizes,
        "budget_rule": f"frames seen per training = max({min_frames}, 10 N) for DPA-4 and CHGNet alike",
        "settings": {"DPA-4": "dpa4-neo, batch 1, lr 1e-5 -> 1e-6, energy bias re-fitted after training",
                     "CHGNet": "CHGNet 0.3.0, embeddings frozen, lr 1e-3 cosine, batch min(4, N // 10), "
                               "per-element energies re-fitted"},
        "zero_shot": zero_shot,
        "fine_tuned": fine_tuned,
        "force_rmse_ratio_chgnet_over_dpa4": [c["force_rmse"] / d["force_rmse"]
                                              for c, d in zip(fine_tuned["CHGNet"], fine_tuned["DPA-4"])],
        "wall_s": time.perf_counter() - start,
        "environment": env,
    }
    save("foundation_models", result, args.out)
    plot(result, args.out / "foundation_models.png")


if __name__ == "__main__":
    main()
