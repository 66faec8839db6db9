"""Selection: QUESTS entropy selection (PFD SI, Algorithm 1) vs random selection at equal label budget.

Part 1 - accuracy. A candidate pool of fcc Cu frames (8 atoms) from four conditions in
unequal shares, as an exploration run produces them: 70 % "cold" (rattle σ 0.03 Å),
20 % "warm" (0.10 Å), 7 % "compressed" (lattice -5 %), 3 % "hot" (0.20 Å, strain ±3 %).
Labels come from ASE's EMT (a cheap stand-in for DFT; every pool frame is labelled up
front but a model only sees the labels of the frames selected for it). From the pool,
``budget`` frames are picked by entropy selection and by random selection (several seeds);
a DeePMD se_e2_a model is trained on each pick, and tested on a held-out set with equal
shares of the four conditions (so rare conditions count as much as common ones). Reported:
the QUESTS entropy of each training set, the held-out force RMSE overall and per condition.

Part 2 - cost. The time to select 100 of 5000 frames x 64 atoms (diamond Si, rattled with
random amplitudes) with ``entropy_select`` (chunk_size 1), split into the one-off numba
compilation and the selection itself (``--quick``: 20 of 1000).

Usage: ``python benchmarks/selection.py [--quick] [--threads 2]``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Timer, emt_cu_frames, environment, parse_args, pyplot, save, save_figure

#: condition -> (share of the pool, rattle σ Å, strain half-width, lattice scale)
CONDITIONS = {
    "cold": (0.70, 0.03, 0.01, 1.00),
    "warm": (0.20, 0.10, 0.02, 1.00),
    "compressed": (0.07, 0.05, 0.01, 0.95),
    "hot": (0.03, 0.20, 0.03, 1.00),
}


def make_pool(n_pool: int, seed: int):
    """Pool with the CONDITIONS shares, and a list of each frame's condition."""
    from pfd_atomate.data import Dataset

    parts, tags = [], []
    for i, (name, (share, rattle, strain, scale)) in enumerate(CONDITIONS.items()):
        n = max(1, round(share * n_pool))
        parts.append(emt_cu_frames(n, seed=seed + i, displacement=rattle, strain=strain, scale=scale))
        tags += [name] * n
    return Dataset.concat(parts, name="pool"), tags


def make_test(n_per_condition: int, seed: int):
    from pfd_atomate.data import Dataset

    parts, tags = [], []
    for i, (name, (_, rattle, strain, scale)) in enumerate(CONDITIONS.items()):
        parts.append(emt_cu_frames(n_per_condition, seed=seed + i, displacement=rattle, strain=strain, scale=scale))
        tags += [name] * n_per_condition
    return Dataset.concat(parts, name="test"), tags


def si_candidates(n_frames: int, seed: int):
    """Unlabelled 64-atom diamond Si frames rattled with random amplitudes 0.02-0.25 Å."""
    from ase.build import bulk

    from pfd_atomate.data import Dataset, Frame

    rng = np.random.default_rng(seed)
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        eps = rng.uniform(-0.03, 0.03, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, rng.uniform(0.02, 0.25), size=atoms.positions.shape)
        frames.append(Frame.from_atoms(atoms, with_labels=False))
    return Dataset(frames=frames, name="si-candidates")


def selection_cost(n_candidates: int, n_select: int) -> dict:
    """Wall time of entropy selection on n_candidates 64-atom frames (numba compile timed apart)."""
    from pfd_atomate.select.entropy import entropy_select

    with Timer() as compile_t:  # numba compiles quests' kernels on first use (cached on disk afterwards)
        entropy_select(si_candidates(4, seed=1), 2)
    candidates = si_candidates(n_candidates, seed=2)
    with Timer() as t:
        sel = entropy_select(candidates, n_select, chunk_size=1)
    out = {"n_candidates": n_candidates, "atoms_per_frame": 64, "n_select": n_select, "chunk_size": 1,
           "first_call_s": compile_t.seconds, "select_s": t.seconds, "selected_entropy": sel.selected_entropy}
    print(f"entropy_select {n_select} of {n_candidates} x 64 atoms: {t.seconds:.1f} s "
          f"(first call incl. numba compile {compile_t.seconds:.1f} s)")
    return out


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax_h, ax_f) = plt.subplots(1, 2, figsize=(10, 4.2))
    runs = result["runs"]
    names = list(runs)
    colours = ["tab:red" if n.startswith("entropy") else "tab:blue" for n in names]
    ax_h.bar(range(len(names)), [runs[n]["train_entropy"] for n in names], color=colours)
    ax_h.set_xticks(range(len(names)))
    ax_h.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax_h.set_ylabel("QUESTS entropy of the training set (nats)")
    conditions = list(CONDITIONS) + ["all"]
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        values = [1000 * runs[n]["force_rmse"][c] for c in conditions]
        ax_f.bar(np.arange(len(conditions)) + i * width, values, width, label=n, color=colours[i],
                 alpha=0.5 + 0.5 * (i == 0))
    ax_f.set_xticks(np.arange(len(conditions)) + 0.4 - width / 2)
    ax_f.set_xticklabels(conditions)
    ax_f.set_ylabel("held-out force RMSE (meV/Å)")
    ax_f.legend(fontsize=7)
    fig.suptitle(f"entropy vs random selection, {result['budget']} labels of a {result['pool_size']}-frame pool "
                 "(labels: EMT Cu)")
    save_figure(fig, path)


def main() -> None:
    from pfd_atomate.evaluate.metrics import frame_errors
    from pfd_atomate.select.entropy import dataset_entropy, entropy_select
    from pfd_atomate.select.sampling import random_select
    from pfd_atomate.train.deepmd import DeepMDBackend

    args = parse_args("QUESTS entropy vs random selection")
    quick = args.quick
    pool_size, budget = (150, 10) if quick else (400, 20)
    seeds = [0] if quick else [0, 1, 2]
    steps = 300 if quick else 1000
    start = time.perf_counter()
    env = environment(args.threads)

    pool, pool_tags = make_pool(pool_size, seed=10)
    test, test_tags = make_test(5 if quick else 20, seed=100)
    picks = {}
    with Timer() as t_sel:
        picks["entropy"] = entropy_select(pool, budget, chunk_size=1).indices
    for s in seeds:
        picks[f"random seed {s}"] = random_select(len(pool), budget, seed=s)

    backend = DeepMDBackend(template="se_e2_a", numb_steps=steps, start_lr=3e-3, rcut=4.5, rcut_smth=0.5, seed=0,
                            n_threads=args.threads)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PFD_MODEL_CACHE"] = str(Path(tmp) / "model-cache")  # keep the user's model cache clean
        for name, idx in picks.items():
            train = pool.subset(idx, name=name)
            model = backend.train([train], Path(tmp) / name.replace(" ", "-"))
            pred = backend.predict(model, test)
            per_condition = {}
            for cond in list(CONDITIONS) + ["all"]:
                rows = [i for i, c in enumerate(test_tags) if cond in ("all", c)]
                per_condition[cond] = frame_errors(test.subset(rows), pred.subset(rows)).force_rmse
            runs[name] = {
                "train_entropy": dataset_entropy(train),
                "condition_counts": {c: sum(pool_tags[i] == c for i in idx) for c in CONDITIONS},
                "force_rmse": per_condition,
                "energy_rmse": frame_errors(test, pred).energy_rmse,
            }
            print(f"{name:16s} H={runs[name]['train_entropy']:.3f} nats  counts {runs[name]['condition_counts']}  "
                  f"F RMSE all {1000 * per_condition['all']:.0f} meV/Å, hot {1000 * per_condition['hot']:.0f}")

    random_runs = [r for n, r in runs.items() if n.startswith("random")]
    ent = runs["entropy"]
    summary = {
        "entropy_minus_random_mean_entropy": ent["train_entropy"] - np.mean([r["train_entropy"] for r in random_runs]),
        "random_over_entropy_force_rmse": {
            c: float(np.mean([r["force_rmse"][c] for r in random_runs]) / ent["force_rmse"][c])
            for c in list(CONDITIONS) + ["all"]
        },
    }
    cost = selection_cost(1000, 20) if quick else selection_cost(5000, 100)
    result = {
        "benchmark": "selection",
        "mode": "quick" if quick else "full",
        "labels": "ASE EMT for fcc Cu (NOT DFT), 8-atom frames",
        "pool_size": len(pool),
        "pool_conditions": {c: pool_tags.count(c) for c in CONDITIONS},
        "test_conditions": {c: test_tags.count(c) for c in CONDITIONS},
        "budget": budget,
        "model": f"DeePMD se_e2_a from scratch, {steps} steps, start_lr 3e-3, rcut 4.5 Å",
        "entropy_select_pool_s": t_sel.seconds,
        "runs": runs,
        "summary": summary,
        "selection_cost": cost,
        "wall_s": time.perf_counter() - start,
        "environment": env,
    }
    print(f"summary: {summary}")
    save("selection", result, args.out)
    plot(result, args.out / "selection.png")


if __name__ == "__main__":
    main()
