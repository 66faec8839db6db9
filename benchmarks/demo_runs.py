"""The demo's wall time with 1 and 2 workers, and what a SIGKILL during the loop's labels costs.

Three runs of ``pfd demo`` (CP2K labels, DPA-4 teacher), each in its own run folder, one after the other:

1. uninterrupted, ``--workers 2``;
2. uninterrupted, ``--workers 1``;
3. ``--workers 1``, killed (SIGKILL to the whole process group) as soon as the progress line says that
   ``--kill-after`` labels of a fine-tune iteration are done, then run again on the same folder.

CP2K runs are counted from the launch folders: atomate2 gzips ``cp2k.out`` when a static job finishes,
so ``cp2k.out.gz`` is a finished label and a bare ``cp2k.out`` one the kill interrupted. Labels
recomputed after the kill = finished CP2K runs - distinct frames labelled (the report's
``dft_labels_spent``); it must be 0. Wall time saved by resuming = (uninterrupted 1-worker wall time)
- (wall time of the resumed run).

Usage: ``python benchmarks/demo_runs.py [--quick] [--kill-after 1] [--skip-clean] [--out DIR]``. With
``--quick`` (the demo's smoke run) it takes about 40 minutes on 2 free cores, without it hours (the full
demo, three times). Writes ``<out>/demo_runs.json``. Workers are single-threaded whatever ``--threads`` says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import environment, parse_args, pyplot, save, save_figure

#: "stage 0, iteration 0: labelling 2 frames (1/2)"
LOOP_LABELS = re.compile(r"stage \d+, iteration \d+: labelling \d+ frames \((\d+)/\d+\)")


def demo_command(run_dir: Path, workers: int, full: bool) -> list[str]:
    """The CLI's demo, as the README runs it (single-threaded workers)."""
    cmd = [sys.executable, "-m", "pfd_atomate.cli.main", "demo", "--run-dir", str(run_dir), "--workers", str(workers)]
    return cmd if full else [*cmd, "--quick"]


def run_demo(run_dir: Path, workers: int, full: bool, kill_after: int | None = None) -> dict:
    """Run the demo; with ``kill_after``, SIGKILL it once that many loop labels of one iteration are done.

    Returns the wall time, whether it was killed, and the last progress line seen.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # lines as they happen: the kill waits for one
    log = (run_dir.parent / f"{run_dir.name}.log").open("a")
    start = time.perf_counter()
    proc = subprocess.Popen(demo_command(run_dir, workers, full), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    killed, last = False, ""
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        log.flush()
        if "jobs " in line:
            last = line.strip()
        match = LOOP_LABELS.search(line)
        if kill_after is not None and match and int(match.group(1)) >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)  # the demo, its FireWorks workers and CP2K with them
            killed = True
            break
    proc.wait()
    log.close()
    return {"wall_s": round(time.perf_counter() - start, 1), "killed": killed, "returncode": proc.returncode,
            "last_progress": last}


def cp2k_runs(run_dir: Path) -> dict[str, int]:
    """Finished (gzipped) and interrupted (plain) CP2K outputs under the run's launch folders."""
    return {"finished": len(list(run_dir.glob("workers/**/cp2k.out.gz"))),
            "interrupted": len(list(run_dir.glob("workers/**/cp2k.out")))}


def report(run_dir: Path) -> dict:
    """The figures of the demo's report.json that this benchmark compares."""
    r = json.loads((run_dir / "report.json").read_text())
    keys = ("dft_labels_spent", "dft_labels_initial", "dft_labels_in_loop", "iterations", "converged", "resumed",
            "jobs_rerun_on_resume", "wall_time_s")
    return {**{k: r.get(k) for k in keys},
            "PF_force_rmse": r["PF_teacher_on_held_out_dft"]["force_rmse_ev_per_a"],
            "PFD_force_rmse": r["PFD_student_on_held_out_dft"]["force_rmse_ev_per_a"]}


def plot(result: dict, path: Path) -> None:
    """Bars: wall time of each uninterrupted run, and the killed run stacked under its resumed run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names, walls = [], []
    for workers in (2, 1):
        if f"workers_{workers}" in result:
            names.append(f"{workers} worker{'s' if workers > 1 else ''}")
            walls.append(result[f"workers_{workers}"]["wall_s"] / 60)
    ax.bar(names, walls, color="tab:blue")
    kill = result["kill_resume"]
    before, after = kill["killed_run"]["wall_s"] / 60, kill["resumed_run"]["wall_s"] / 60
    ax.bar(["1 worker, killed + resumed"], [before], color="tab:red", label="until the SIGKILL")
    ax.bar(["1 worker, killed + resumed"], [after], bottom=[before], color="tab:green", label="resumed run")
    ax.set_ylabel("wall time (min)")
    ax.set_title(f"pfd demo ({result['mode']}): recomputed labels after the kill: "
                 f"{kill['labels_recomputed_after_kill']}", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    def options(parser):
        parser.add_argument("--kill-after", type=int, default=1, help="loop labels done before the kill (default 1)")
        parser.add_argument("--work", type=Path, default=Path("runs/benchmark-demo"), help="parent of the run folders")
        parser.add_argument("--skip-clean", action="store_true", help="only the kill/resume run (no 1/2-worker timing)")

    args = parse_args(__doc__.splitlines()[0], options)
    args.full = not args.quick
    out = args.out
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"mode": "full" if args.full else "quick", "environment": environment(1), "system": "diamond Si8, "
                    "CP2K PBE labels, DPA-4 teacher, se_e2_a student, single-threaded workers"}

    def fresh(name: str) -> Path:
        path = args.work / name
        shutil.rmtree(path, ignore_errors=True)
        (args.work / f"{name}.log").unlink(missing_ok=True)
        return path

    if not args.skip_clean:
        for workers in (2, 1):
            run_dir = fresh(f"workers-{workers}")
            run = run_demo(run_dir, workers, args.full)
            result[f"workers_{workers}"] = {**run, **report(run_dir), "cp2k_runs": cp2k_runs(run_dir)}
            print(f"{workers} worker(s): {run['wall_s']} s", flush=True)
        result["speedup_2_over_1_workers"] = round(result["workers_1"]["wall_s"] / result["workers_2"]["wall_s"], 2)

    run_dir = fresh("kill-resume")
    first = run_demo(run_dir, 1, args.full, kill_after=args.kill_after)
    if not first["killed"]:
        raise SystemExit(f"the demo finished before {args.kill_after} loop label(s) were done: nothing was killed")
    at_kill = cp2k_runs(run_dir)
    second = run_demo(run_dir, 1, args.full)
    after = cp2k_runs(run_dir)
    resumed = report(run_dir)
    kill = {"killed_run": first, "cp2k_runs_at_kill": at_kill, "resumed_run": second, "cp2k_runs_after_resume": after,
            "report": resumed,
            "labels_finished_before_kill": at_kill["finished"],
            "labels_paid_by_resumed_run": after["finished"] - at_kill["finished"],
            "labels_recomputed_after_kill": after["finished"] - resumed["dft_labels_spent"]}
    if "workers_1" in result:
        kill["wall_saved_by_resume_s"] = round(result["workers_1"]["wall_s"] - second["wall_s"], 1)
    result["kill_resume"] = kill
    save("demo_runs", result, out)
    plot(result, out / "demo_runs.png")
    print(json.dumps({k: v for k, v in kill.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
