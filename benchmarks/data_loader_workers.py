"""deepmd-kit's data-loader worker processes on a small machine: time per training step (issue 12, item 6).

deepmd-kit (PyTorch backend) reads its batches through a ``torch.utils.data.DataLoader`` with
``NUM_WORKERS`` worker processes (environment variable; default ``min(4, cpu count)``: 2 here). A training
pinned to one thread (``DeepMDBackend(n_threads=1)``) still forks those workers, and two trainings at once on
two cores run six processes. This trains the library's default se_e2_a student (the preset, fewer steps, not
compressed) on the 200 CP2K-labelled Si8 frames of ``data/si8_cp2k_k333_n200_s11`` with ``NUM_WORKERS`` unset,
1 and 0, one training alone and two at once, in alternating rounds within one run, and reads deepmd-kit's own
"average training time" (s per step, the first ``disp_freq`` steps excluded) from each log.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loader_workers.py [--steps 3000] [--rounds 2]``;
writes ``results/data_loader_workers.json`` and ``.png``.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import environment, parse_args, pyplot, save, save_figure
from _dft_labels import DATA, read_cached_dataset

SETTINGS = ("unset", "1", "0")  # NUM_WORKERS; "unset": deepmd-kit's default, min(4, cpu count)
_AVERAGE = re.compile(r"average training time: ([0-9.]+) s/batch")


def seconds_per_step(log: Path) -> float:
    """deepmd-kit's "average training time" (s per step) from a ``dp_train.log``.

    Raises:
        ValueError: the log has no such line (the training did not finish).
    """
    found = _AVERAGE.findall(log.read_text(errors="replace"))
    if not found:
        raise ValueError(f"no 'average training time' line in {log}")
    return float(found[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--steps", type=int, default=3000, help="training steps per run"),
        p.add_argument("--rounds", type=int, default=2, help="repeats of every setting (alternating)")))
    from pfd_atomate.presets import se_e2_a_student

    steps = 400 if args.quick else args.steps
    rounds = 1 if args.quick else args.rounds
    _, frames, _ = read_cached_dataset(DATA / "si8_cp2k_k333_n200_s11.json.gz")
    # the library's default student at one thread, shortened; `disp_freq` = steps / 10, so the average
    # leaves out the first tenth (start-up, the workers' fork)
    student = se_e2_a_student(n_threads=1, numb_steps=steps, compress=False)
    runs: dict[str, dict[str, list[float]]] = {s: {"alone": [], "two at once": []} for s in SETTINGS}
    scratch = Path(tempfile.mkdtemp(prefix="pfd-workers-"))

    def one(tag: str) -> float:
        workdir = scratch / tag
        student.train([frames], workdir)
        return seconds_per_step(workdir / "dp_train.log")

    for r in range(rounds):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for setting in order:
            # the dp subprocess inherits os.environ; both trainings of a pair share the setting
            if setting == "unset":
                os.environ.pop("NUM_WORKERS", None)
            else:
                os.environ["NUM_WORKERS"] = setting
            runs[setting]["alone"].append(one(f"r{r}-{setting}-alone"))
            with ThreadPoolExecutor(2) as pool:
                runs[setting]["two at once"].extend(pool.map(one, [f"r{r}-{setting}-a", f"r{r}-{setting}-b"]))
            print(setting, {k: [round(1000 * x, 1) for x in v] for k, v in runs[setting].items()}, flush=True)
    os.environ.pop("NUM_WORKERS", None)

    ms = {s: {k: 1000 * statistics.mean(v) for k, v in d.items()} for s, d in runs.items()}
    result = {
        "benchmark": "data_loader_workers",
        "environment": environment(1),
        "system": "Si8 diamond, 200 CP2K-labelled frames (data/si8_cp2k_k333_n200_s11)",
        "student": {"template": student.template, "numb_steps": steps, "batch_size": student.batch_size,
                    "threads_per_training": 1, "compressed": False},
        "rounds": rounds,
        "seconds_per_step": runs,
        "ms_per_step_mean": ms,
        "ratio_to_unset": {s: {k: ms[s][k] / ms["unset"][k] for k in ms[s]} for s in SETTINGS},
    }
    save("data_loader_workers", result, args.out)
    plot(ms, args.out / "data_loader_workers.png", steps, rounds)


def plot(ms: dict, path: Path, steps: int, rounds: int) -> None:
    """Bar chart of ms per step per ``NUM_WORKERS`` setting, alone and two at once."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    width = 0.38
    for i, mode in enumerate(("alone", "two at once")):
        xs = [j + (i - 0.5) * width for j in range(len(SETTINGS))]
        ax.bar(xs, [ms[s][mode] for s in SETTINGS], width, label=mode)
    ax.set_xticks(range(len(SETTINGS)), [f"NUM_WORKERS={s}" for s in SETTINGS])
    ax.set_ylabel("ms per training step")
    ax.set_title(f"se_e2_a student, Si8, 1 thread per training\n{steps} steps x {rounds} rounds, 2-core CPU",
                 fontsize=9)
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
