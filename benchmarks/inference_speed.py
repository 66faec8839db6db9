"""Inference speed: fine-tuned teacher vs distilled DeePMD student in MD, seconds per atom per step.

PFD's promise (b): the distilled student is much faster than the fine-tuned foundation
model ("almost two orders of magnitude"). System: diamond Si (the PFD demo system), cells of 64,
512, 4096 and 13,824 atoms (2x2x2, 4x4x4, 8x8x8, 12x12x12 conventional cells; ``--reps`` picks
others), NVE
velocity-Verlet at 300 K through ASE, one force/energy/stress call per step. Each timing
runs in its own process under an address-space limit (``--mem-limit-gb``), so a size that
does not fit fails alone, and records that process's peak memory. deepmd-kit builds its
neighbour list with ``vesin`` (O(N), a project dependency); without it deepmd-kit 3.2 falls
back to an all-pairs list that needs more than 14 GB for one 4096-atom frame.

Models (all trained here, in this run; labels: the pretrained CHGNet itself, as a stand-in for
DFT - speed does not depend on the labels):
- teacher: DPA-4 (``dpa4-neo``, the default foundation model) fine-tuned for a few steps
  (``--dpa4``, on by default in full mode);
- teacher: CHGNet 0.3.0 fine-tuned;
- teacher (optional, ``--dpa2``): a *tiny* DPA-2 (the repo's 3-layer ``dpa2`` template),
  pretrained here from scratch and then fine-tuned (no published DPA-2 weights offline);
- student: the library's default student (``presets.se_e2_a_student``: se_e2_a, rcut 6 Å), trained from
  scratch, frozen, and the same model compressed with ``dp --pt compress`` (what PFD ships by default). The
  ratios teacher ÷ student are taken against this compressed student;
- student: the demo's student (se_e2_a, rcut 5 Å: fewer neighbours), compressed, for the demo's figures.

Timings are the best of ``--repeats`` runs (the machine may be shared); the ratio
teacher ÷ student is taken per size within the same run. Runs on the CPU unless torch
sees a GPU (the JSON records which).

Usage: ``python benchmarks/inference_speed.py [--quick] [--threads 2] [--dpa2/--no-dpa2] [--reps 2 4 6]
[--mem-limit-gb 10]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Timer, environment, parse_args, pyplot, save, save_figure, si_frames


def seconds_per_atom_step(backend, model, n_rep: int, n_steps: int, repeats: int, threads: int) -> float:
    """Best-of-``repeats`` wall time of velocity-Verlet MD per atom per step (after 1 warm-up step), s."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from _common import set_threads

    set_threads(threads)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n_rep,) * 3)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = backend.calculator(model)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(1)  # warm-up: model load, graph/neighbour-list set-up, TorchScript compilation
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            dyn.run(n_steps)
        best = min(best, t.seconds / n_steps / len(atoms))
    return best


def _child(queue, mem_limit_bytes: int, args: tuple) -> None:
    """Run one timing under an address-space limit, so a model that needs too much memory fails
    alone instead of waking the kernel's OOM killer on a shared machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (mem_limit_bytes, mem_limit_bytes))
    try:
        value = seconds_per_atom_step(*args)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
        queue.put(("ok", (value, peak_gb)))
    except (MemoryError, RuntimeError) as err:  # torch reports failed allocations as RuntimeError
        queue.put(("error", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))


def timed_in_subprocess(mem_limit_gb: float, *args) -> tuple[tuple[float, float] | None, str]:
    """((s/atom/step, peak resident memory GiB) or None, error message) of :func:`seconds_per_atom_step`,
    run in a fresh process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, int(mem_limit_gb * 2**30), args))
    proc.start()
    proc.join()
    if not queue.empty():
        status, value = queue.get()
        return (value, "") if status == "ok" else (None, value)
    return None, f"no result: the process ended with exit code {proc.exitcode} (out of memory or killed)"


def deepmd_neighbour_list() -> str:
    """Which neighbour-list builder deepmd-kit's inference uses here (vesin if importable)."""
    try:
        import vesin.torch  # noqa: F401

        return "vesin (O(N) cell list)"
    except ImportError:
        return "deepmd-kit built-in all-pairs (vesin not installed)"


STUDENT = "student: se_e2_a compressed"  # the library's default student (rcut 6 Å)
DEMO_STUDENT = "student: demo's se_e2_a (rcut 5 Å) compressed"


def train_models(quick: bool, dpa2: bool, threads: int, workdir: Path, dpa4: bool = True) -> tuple[dict, dict]:
    """Fine-tune the teacher(s) and train the student; returns (models, training wall times s)."""
    from pfd_atomate.presets import dpa4_teacher, se_e2_a_student
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    chgnet = CHGNetBackend(epochs=1 if quick else 3, batch_size=4, learning_rate=1e-3, n_threads=threads)
    frames = si_frames(8 if quick else 24, seed=0, strain=0.02, displacements=(0.08,))
    labelled = chgnet.predict(None, frames)  # pretrained CHGNet as the stand-in labeller
    models, walls = {}, {}
    with Timer() as t:
        models["teacher: CHGNet fine-tuned"] = (chgnet, chgnet.train([labelled], workdir / "chgnet"))
    walls["teacher: CHGNet fine-tuned"] = t.seconds
    if dpa4:
        backend = dpa4_teacher(numb_steps=5 if quick else 20, steps_per_frame=None, n_threads=threads)
        with Timer() as t:
            models["teacher: DPA-4 fine-tuned"] = (backend, backend.train([labelled], workdir / "dpa4"))
        walls["teacher: DPA-4 fine-tuned"] = t.seconds
    if dpa2:
        base = DeepMDBackend(template="dpa2", numb_steps=60, rcut=5.0, rcut_smth=0.5, n_threads=threads)
        with Timer() as t:
            pretrained = base.train([labelled], workdir / "dpa2-pretrain")
            tuned_backend = DeepMDBackend(
                template="dpa2", base_model=str(pretrained.materialize(workdir / "dpa2-base")), numb_steps=30,
                n_threads=threads,
            )
            models["teacher: DPA-2 (tiny) fine-tuned"] = (tuned_backend, tuned_backend.train([labelled],
                                                                                              workdir / "dpa2-ft"))
        walls["teacher: DPA-2 (tiny) fine-tuned"] = t.seconds
    # speed does not depend on the training length: a few hundred steps, the library's other settings
    student = se_e2_a_student(numb_steps=100 if quick else 400, n_threads=threads)
    with Timer() as t:
        frozen = student.train([labelled], workdir / "student")
    walls["student: se_e2_a"] = t.seconds
    with Timer() as t:
        compressed = student.compress_model(frozen, workdir / "student")
    walls[STUDENT] = t.seconds
    models["student: se_e2_a"] = (student, frozen)
    models[STUDENT] = (student, compressed)
    demo = se_e2_a_student(numb_steps=100 if quick else 400, rcut=5.0, n_threads=threads)
    with Timer() as t:
        models[DEMO_STUDENT] = (demo, demo.compress_model(demo.train([labelled], workdir / "demo-student"),
                                                          workdir / "demo-student"))
    walls[DEMO_STUDENT] = t.seconds
    return models, walls


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax, ax_m, ax_r) = plt.subplots(1, 3, figsize=(15, 4.4))
    sizes = result["n_atoms"]
    limit = result["memory_limit_gb"]
    for name, values in result["seconds_per_atom_step"].items():
        line, = ax.plot(sizes, [np.nan if v is None else v for v in values], "o-", label=name)
        memory = result.get("peak_memory_gib", {}).get(name, [None] * len(sizes))
        ax_m.plot(sizes, [np.nan if v is None else v for v in memory], "o-", color=line.get_color(), label=name)
        for n, v in zip(sizes, values):
            if v is None:  # the size did not fit under the memory limit: mark it where it would be
                ax_m.plot([n], [limit], "x", color=line.get_color(), ms=10, mew=2)
                ax_m.annotate(f"failed at {limit:g} GiB", (n, limit), textcoords="offset points", xytext=(-60, 8),
                              fontsize=7, color=line.get_color())
    ax.set_yscale("log")
    ax.set_ylabel("s / atom / MD step")
    ax.set_title(f"MD inference cost on {result['environment']['device']}, {result['environment']['threads']} threads")
    ax_m.axhline(limit, color="0.6", lw=0.8, ls=":")
    ax_m.set_ylabel("peak resident memory of the MD process (GiB)")
    ax_m.set_title("memory")
    for name, ratios in result["teacher_over_student"].items():
        ax_r.plot(sizes, [np.nan if v is None else v for v in ratios], "s-", label=name)
    ax_r.set_ylabel("teacher time ÷ student time")
    ax_r.axhline(1.0, color="0.6", lw=0.8)
    ax_r.set_title("speed-up of the distilled student")
    for a in (ax, ax_m, ax_r):
        a.set_xscale("log")
        a.set_xlabel("atoms")
        a.legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dpa4", action=argparse.BooleanOptionalAction, default=None,
                       help="time the fine-tuned DPA-4 teacher (default: on in full mode)")
        p.add_argument("--dpa2", action=argparse.BooleanOptionalAction, default=False,
                       help="also time a tiny fine-tuned DPA-2 teacher (default: off)")
        p.add_argument("--repeats", type=int, default=None, help="timing repeats per size (best is kept)")
        p.add_argument("--reps", type=int, nargs="+", default=None,
                       help="cell repetitions of the 8-atom cubic cell (default: 2 4 8 12; quick: 2 4)")
        p.add_argument("--mem-limit-gb", type=float, default=16.0,
                       help="address-space limit of each timing process, GiB (default 16)")

    args = parse_args("teacher vs student MD inference speed", extra)
    dpa2 = args.dpa2
    dpa4 = (not args.quick) if args.dpa4 is None else args.dpa4
    repeats = args.repeats or (1 if args.quick else 2)
    reps = args.reps or ([2, 4] if args.quick else [2, 4, 8, 12])  # 64, 512 (, 4096, 13824) atoms
    # fewer timed steps for bigger cells: a teacher step on 4096 atoms takes several seconds on 2 cores
    steps = {n: (5 if n <= 2 else 2) if args.quick else max(2, round(10 * (2 / n) ** 2)) for n in reps}
    start = time.perf_counter()
    env = environment(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PFD_MODEL_CACHE"] = str(Path(tmp) / "model-cache")  # keep the user's model cache clean
        models, train_walls = train_models(args.quick, dpa2, args.threads, Path(tmp), dpa4=dpa4)
        timings: dict[str, list[float | None]] = {name: [] for name in models}
        peak_memory: dict[str, list[float | None]] = {name: [] for name in models}
        failures: dict[str, str] = {}
        for n in reps:
            for name, (backend, model) in models.items():
                value, error = timed_in_subprocess(args.mem_limit_gb, backend, model, n, steps[n],
                                                   repeats if n <= 4 else 1, args.threads)
                timings[name].append(None if value is None else value[0])
                peak_memory[name].append(None if value is None else value[1])
                if error:
                    failures[f"{name} @ {8 * n**3} atoms"] = error
                    print(f"{8 * n**3:5d} atoms  {name:34s} FAILED: {error}")
                else:
                    print(f"{8 * n**3:5d} atoms  {name:34s} {value[0]:.3e} s/atom/step, peak {value[1]:.2f} GiB")
    ratios = {name: [None if t is None or s is None else t / s for t, s in zip(values, timings[STUDENT])]
              for name, values in timings.items() if name != STUDENT}
    result = {
        "benchmark": "inference_speed",
        "mode": "quick" if args.quick else "full",
        "system": "diamond Si, NVE velocity Verlet 1 fs from 300 K, ASE calculators",
        "labels": "pretrained CHGNet 0.3.0 (stand-in for DFT; speed does not depend on the labels)",
        "dpa2_note": "tiny 3-layer DPA-2 template pretrained and fine-tuned here (no published DPA-2 weights "
                     "offline); a real DPA-2 teacher is larger and slower" if dpa2 else "not run",
        "dpa4_note": "DPA-4 (dpa4-neo) checkpoint fine-tuned a few steps, run from its .pt checkpoint (eager "
                     "PyTorch)" if dpa4 else "not run",
        "ratios_against": STUDENT,
        "n_atoms": [8 * n**3 for n in reps],
        "md_steps_timed": [steps[n] for n in reps],
        "repeats": repeats,
        "seconds_per_atom_step": timings,
        "peak_memory_gib": peak_memory,
        "failures": failures,
        "memory_limit_gb": args.mem_limit_gb,
        "deepmd_neighbour_list": deepmd_neighbour_list(),
        "teacher_over_student": ratios,
        "training_wall_s": train_walls,
        "wall_s": time.perf_counter() - start,
        "environment": env,
    }
    for name, r in ratios.items():
        print(f"{name} ÷ compressed student: "
              + ", ".join(f"{8 * n**3} atoms " + ("n/a" if x is None else f"{x:.1f}x") for n, x in zip(reps, r)))
    save("inference_speed", result, args.out)
    plot(result, args.out / "inference_speed.png")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--replot":  # redraw a saved result without rerunning
        import json

        plot(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[2]).with_suffix(".png"))
    else:
        main()
