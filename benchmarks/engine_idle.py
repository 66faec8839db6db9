"""CPU the local engine (``run_flow``) takes from the jobs while one long job runs.

On a 2-core machine every percent of a core that the embedded MongoDB server, the idle FireWorks worker and
the monitoring loop take is taken from a training or a CP2K run. A student training of the multi-phase run
(2026-12-03) ran beside a server at 29 % of one core. This runs, per setting, the same small flow with
``run_flow(workers=2)``: ``--fan`` short jobs with a ``--payload`` of numbers each (their specs fill the
fireworks collection, as a PFD flow's jobs do), then one job that sleeps ``--hold`` seconds. While it sleeps,
the only work is the engine's: the CPU seconds of the server, of both ``rlaunch`` workers (one runs the sleeping
job, one is idle) and of this process (the monitoring loop) are read from ``/proc`` at the start and the end of
the sleep, as a share of one core. The settings run one after the other in one session.

Usage: ``.venv/bin/python benchmarks/engine_idle.py [--hold 60] [--fan 100] [--payload 10000]``; writes
``results/engine_idle.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from jobflow import Flow, job

RESULTS = Path(__file__).resolve().parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")


@job
def hold(seconds: float, payload: list[float] | None = None, after: list | None = None) -> float:
    """Sleep ``seconds`` (a job whose only cost is the engine's); ``payload`` only fills its spec."""
    time.sleep(seconds)
    return seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def engine_processes(run_dir: Path) -> dict[str, list[int]]:
    """The pids of the run's server (``pfd_atomate.workflows.mongo`` on ``run_dir``) and workers (``rlaunch``)."""
    found: dict[str, list[int]] = {"server": [], "workers": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(run_dir) not in cmd:
            continue
        if "pfd_atomate.workflows.mongo" in cmd:
            found["server"].append(int(proc.name))
        elif "rlaunch" in cmd:
            found["workers"].append(int(proc.name))
    return found


def measure(setting: dict, hold_s: float, fan: int, payload: int, root: Path) -> dict:
    """Run the flow with ``run_flow(**setting)``; the engine's CPU while the long job sleeps (% of one core)."""
    import engine_idle  # the workers import the jobs by this module's name, not __main__

    from pfd_atomate.workflows.local import run_flow

    numbers = [float(i) for i in range(payload)]
    short = [engine_idle.hold(0.05, payload=numbers) for _ in range(fan)]
    long = engine_idle.hold(hold_s, after=[j.output for j in short])
    flow = Flow([*short, long])
    run_dir = root / setting["name"]
    marks: dict[str, tuple[float, dict]] = {}
    pids: dict[str, list[int]] = {}

    def snapshot() -> tuple[float, dict]:
        pids.update(pids or engine_processes(run_dir))  # found once: scanning /proc is the monitor's cost too
        return time.perf_counter(), {
            "server": sum(cpu_seconds(p) for p in pids["server"]),
            "workers": sum(cpu_seconds(p) for p in pids["workers"]),
            "monitor": time.process_time(),
        }

    def on_progress(view) -> None:
        states = [s for s, _, _ in view.states.values()]
        if states.count("COMPLETED") == fan and states.count("RUNNING") == 1:  # only the long job runs
            marks["end" if "start" in marks else "start"] = snapshot()

    kwargs = {k: v for k, v in setting.items() if k != "name"}
    start = time.perf_counter()
    result = run_flow(flow, run_dir, workers=2, env={"PYTHONPATH": str(Path(__file__).resolve().parent)},
                      on_progress=on_progress, **kwargs)
    wall = time.perf_counter() - start
    if not result.completed or "end" not in marks:
        raise SystemExit(f"{setting['name']}: flow {result.state}, marks {list(marks)}")
    (t0, a), (t1, b) = marks["start"], marks["end"]
    window = t1 - t0
    share = {k: 100 * (b[k] - a[k]) / window for k in a}
    return {"setting": setting, "window_s": window, "wall_s": wall,
            "cpu_percent_of_one_core": share | {"total": sum(share.values())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the long job sleeps")
    parser.add_argument("--fan", type=int, default=100, help="short jobs before it")
    parser.add_argument("--payload", type=int, default=10000,
                        help="numbers in each short job's spec (8 bytes each: 80 kB, as a PFD MD job's spec)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import environment, save

    settings = [
        {"name": "monitor and idle worker every 1 s", "poll_interval": 1.0, "max_poll_interval": 1.0, "worker_sleep": 1},
        {"name": "default"},
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="engine-idle-") as tmp:
        for setting in settings:
            row = measure(setting, args.hold, args.fan, args.payload, Path(tmp))
            print(row["setting"]["name"], {k: round(v, 1) for k, v in row["cpu_percent_of_one_core"].items()},
                  f"window {row['window_s']:.0f} s, wall {row['wall_s']:.0f} s")
            rows.append(row)
    save("engine_idle", {"benchmark": "engine_idle", "environment": environment(1),
                         "system": f"{args.fan} jobs of {args.payload} numbers, then one job sleeping {args.hold:g} s; "
                                   "run_flow, 2 workers, embedded SecantusDB server",
                         "rows": rows}, RESULTS)


if __name__ == "__main__":
    main()
