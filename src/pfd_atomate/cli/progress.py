"""What a running PFD flow is doing, read from its workflow: the live line and the iteration table.

The local engine reports the state of every job (:class:`~pfd_atomate.workflows.local.RunView`);
the jobs carry their PFD step, stage and iteration as jobflow metadata, so "stage 1, iteration 2:
labelling 4 frames (3/4)" is a count over the jobs of that iteration, and the test of M_i on D_i
is read from the JobStore as soon as it is there.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from pfd_atomate import queries

#: what the user reads for each PFD step that runs for a while
_ACTIONS = {"label": "labelling", "explore": "MD", "train": "training", "test": "testing", "select": "selecting",
            "distill": "distilling", "perturb": "perturbing"}


def training_progress(launch_dir: str) -> str | None:
    """"step 120/400" of a deepmd-kit training running in ``launch_dir`` (its lcurve.out), if any."""
    import json
    from pathlib import Path

    folder = Path(launch_dir) / "train"
    try:
        total = json.loads((folder / "input.json").read_text())["training"]["numb_steps"]
        lines = [ln for ln in (folder / "lcurve.out").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except (OSError, KeyError, ValueError):
        return None
    return f"step {lines[-1].split()[0]}/{total}" if lines else f"step 0/{total}"


def _is_md_task(name: str, meta: dict[str, Any]) -> bool:
    return meta.get("pfd_step") == "explore" or meta.get("distill_step") == "explore"


def _newest_md_tasks(states: dict[int, tuple[str, str, dict[str, Any]]]) -> dict[int, tuple[str, str, dict[str, Any]]]:
    """An MD task is a launcher job replaced by atomate2's MD job of the same name: count it once, as its newest."""
    newest: dict[str, int] = {}
    for fw_id, (_, name, meta) in states.items():
        if _is_md_task(name, meta):
            newest[name] = max(fw_id, newest.get(name, fw_id))
    return {fw_id: v for fw_id, v in states.items() if not _is_md_task(v[1], v[2]) or newest[v[1]] == fw_id}


def describe(states: dict[int, tuple[str, str, dict[str, Any]]], launch_dirs: dict[int, str] | None = None) -> str:
    """One line: jobs done, and for the newest iteration (or the distillation) what runs, with counts
    (and a running training's step, read from the folders in ``launch_dirs``)."""
    states = _newest_md_tasks(states)
    counts = Counter(state for state, _, _ in states.values())
    done, total = counts.get("COMPLETED", 0), len(states)
    parts = [f"jobs {done}/{total} done"]
    # group the iteration's static labels and MD tasks: "stage 1, iteration 2: labelling 4 frames (3/4)"
    by_step: dict[tuple, list[str]] = {}
    for state, _, meta in states.values():
        step = meta.get("pfd_step")
        if step in ("label", "explore") and ("pfd_label_keys" in meta or step == "explore"):
            by_step.setdefault((meta.get("stage"), meta.get("iteration"), step), []).append(state)
    distill_md = [state for state, _, meta in states.values()
                  if meta.get("pfd_step") == "distill" and meta.get("distill_step") == "explore"]
    live = [key for key, members in by_step.items() if any(s != "COMPLETED" for s in members)]
    for stage, iteration, step in sorted(live, key=lambda k: (k[1] is None, k[1] or 0)):
        members = by_step[(stage, iteration, step)]
        where = "initial set" if iteration is None else f"stage {stage}, iteration {iteration}"
        what = f"{len(members)} frames" if step == "label" else f"{len(members)} tasks"
        parts.append(f"{where}: {_ACTIONS[step]} {what} ({members.count('COMPLETED')}/{len(members)})")
    if any(s in ("RUNNING", "RESERVED") for s in distill_md):
        parts.append(f"distillation: teacher MD {len(distill_md)} tasks ({distill_md.count('COMPLETED')}/{len(distill_md)})")
    others = set()
    for fw_id, (state, name, meta) in states.items():
        if state not in ("RUNNING", "RESERVED") or meta.get("pfd_step") == "label" or _is_md_task(name, meta):
            continue
        # a distillation job says which part it is ("distill train student"), the others their step
        text = (f"distill {meta.get('distill_step', name)}" if meta.get("pfd_step") == "distill"
                else _ACTIONS.get(meta.get("pfd_step"), name))
        trains = meta.get("pfd_step") == "train" or meta.get("distill_step") == "train student"
        step = training_progress((launch_dirs or {}).get(fw_id, "")) if trains else None
        others.add(f"{text} {step}" if step else text)
    others = sorted(others)
    if others:
        parts.append("running: " + ", ".join(others))
    return " | ".join(parts)


def iteration_table(rows: list[dict[str, Any]], title: str = "fine-tune iterations") -> Table:
    """A rich table of :func:`pfd_atomate.queries.iteration_tests` rows (RMSE of M_i on D_i)."""
    table = Table(title=title)
    for column in ("stage", "iteration", "labels", "energy RMSE (meV/atom)", "force RMSE (meV/Å)", "accurate",
                   "converged"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["stage"]), str(r["iteration"]), str(r["n_frames"]), f"{1000 * r['energy_rmse']:.2f}",
                      f"{1000 * r['force_rmse']:.1f}",
                      "-" if r.get("accurate_ratio") is None else f"{r['accurate_ratio']:.0%}",
                      "yes" if r.get("converged") else "no")
    return table


class ProgressPrinter:
    """``on_progress`` callback of :func:`~pfd_atomate.workflows.local.run_flow` for the terminal.

    On a terminal the status line is a live display updated in place (jobs done, the iteration's
    labels and MD tasks, a training's step); elsewhere (a log, a pipe) a line is printed when the
    jobs' states change. The iteration table is printed whenever an iteration's test is stored.
    Use it as a context manager around the run, so the live display is closed after.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._last = ""
        self._last_states: dict = {}
        self._n_tests = 0
        self._status = None

    def __enter__(self) -> ProgressPrinter:
        if self.console.is_terminal:
            self._status = self.console.status("starting the workers")
            self._status.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __call__(self, view: Any) -> None:
        """Report the run's state (``view``: a :class:`~pfd_atomate.workflows.local.RunView`)."""
        line = describe(view.states, view.launch_dirs)
        if self._status is not None:
            self._status.update(line)
        elif view.states != self._last_states and line != self._last:
            self.console.print(f"[dim]{line}[/dim]", soft_wrap=True)  # one line per state, unwrapped in a log
        self._last, self._last_states = line, dict(view.states)
        rows = queries.iteration_tests(view.store, view.flow_uuid)
        if len(rows) > self._n_tests:
            self._n_tests = len(rows)
            self.console.print(iteration_table(rows))
