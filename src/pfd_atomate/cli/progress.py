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


def describe(states: dict[int, tuple[str, str, dict[str, Any]]]) -> str:
    """One line: jobs done, and for the newest iteration (or the distillation) what runs, with counts."""
    counts = Counter(state for state, _, _ in states.values())
    done, total = counts.get("COMPLETED", 0), len(states)
    running = [(name, meta) for state, name, meta in states.values() if state in ("RUNNING", "RESERVED")]
    parts = [f"jobs {done}/{total} done"]
    # group the iteration's static labels and MD tasks: "stage 1, iteration 2: labelling 4 frames (3/4)"
    by_step: dict[tuple, list[str]] = {}
    for state, _, meta in states.values():
        step = meta.get("pfd_step")
        if step in ("label", "explore") and ("pfd_label_keys" in meta or step == "explore"):
            by_step.setdefault((meta.get("stage"), meta.get("iteration"), step), []).append(state)
    live = [key for key, members in by_step.items() if any(s != "COMPLETED" for s in members)]
    for stage, iteration, step in sorted(live, key=lambda k: (k[1] is None, k[1] or 0)):
        members = by_step[(stage, iteration, step)]
        where = "initial set" if iteration is None else f"stage {stage}, iteration {iteration}"
        what = f"{len(members)} frames" if step == "label" else f"{len(members)} tasks"
        parts.append(f"{where}: {_ACTIONS[step]} {what} ({members.count('COMPLETED')}/{len(members)})")
    others = sorted({_ACTIONS.get(meta.get("pfd_step"), name) for name, meta in running
                     if meta.get("pfd_step") not in ("label", "explore")})
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

    Prints a status line when it changes and the iteration table whenever an iteration's test
    is stored.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._last = ""
        self._n_tests = 0

    def __call__(self, view: Any) -> None:
        """Report the run's state (``view``: states, store, run uuid)."""
        line = describe(view.states)
        if line != self._last:
            self._last = line
            self.console.print(f"[dim]{line}[/dim]")
        rows = queries.iteration_tests(view.store, view.flow_uuid)
        if len(rows) > self._n_tests:
            self._n_tests = len(rows)
            self.console.print(iteration_table(rows))
