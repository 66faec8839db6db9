"""The ``pfd`` command: run, resume, submit, watch and read PFD runs.

::

    pfd run CONFIG.yaml                 run (or resume) on the embedded store, in the config's run_dir
    pfd run --structure POSCAR          the same with every default (VASP labels, DPA-4, se_e2_a student)
    pfd submit CONFIG.yaml --fireworks  add the flow to a FireWorks LaunchPad (or --jobflow-remote)
    pfd status RUN                      iterations so far, labels spent, RMSE per iteration, what runs
    pfd report RUN                      report.json and plots (parity, RMSE and labels per iteration)
    pfd models RUN --role student -o DIR   the model files out of the store, SHA-256 checked
    pfd config schema | example         the configuration's JSON schema, or a commented example
    pfd demo [--quick]                  the PFD demo (diamond Si, CP2K labels)
    pfd repair-launchpad -l LP.yaml     after a killed FireWorks launcher (docs/workflows.md)

Known-harmless warnings of upstream packages (listed in :data:`HARMLESS_WARNINGS`) are hidden
here, in the command only; the library never silences warnings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(help="PFD (pre-trained -> fine-tune -> distill) force fields with atomate2/jobflow.",
                  no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="The configuration file: its schema and a commented example.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()

#: (category, message regex) of upstream warnings that say nothing about the user's run
HARMLESS_WARNINGS = (
    (UserWarning, r'Field name "schema" in "TaskDocument" shadows'),  # atomate2 CP2K schema
    (DeprecationWarning, r".*contextlib.chdir.*"),  # monty's cd, inside atomate2 jobs
    (FutureWarning, r".*contextlib.chdir.*"),
    (UserWarning, r".*Response.stored_data is not supported.*"),  # jobflow + FireWorks
    (UserWarning, r".*pin_memory.*no accelerator.*"),  # torch DataLoader on a CPU
    (UserWarning, r".*No tensor product accelerator.*"),  # SevenNet
    (UserWarning, r".*contains an Flow or Job as an input.*"),
    (UserWarning, r".*Converting a tensor with requires_grad=True to a scalar.*"),  # chgnet's volume tensor
)
#: upstream loggers whose warnings are advice, not news: deepmd-kit's thread and batch-size hints,
#: torch's "Triton not available" on a CPU build
HARMLESS_LOGGERS = ("deepmd.env", "deepmd.utils.batch_size", "torch._library.triton")


class _OwnInfoOrWarnings(logging.Filter):
    """pfd_atomate's INFO lines, everybody's warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith("pfd_atomate")


@app.callback()  # before every command
def _quiet_upstream() -> None:
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # the workers, too
    root = logging.getLogger()
    if not root.handlers:
        # as logging.basicConfig, only where nobody configured logging: a host (pytest, a notebook) keeps its own
        # handlers untouched. FireWorks sets its loggers to DEBUG: on our console, other libraries' warnings only.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.addFilter(_OwnInfoOrWarnings())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("pfd_atomate").setLevel(logging.INFO)
    for name in HARMLESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(code)


def _load(config_file: Optional[Path], structure: list[Path], run_dir: Optional[Path], workers: Optional[int]):
    """(config, structures) from a file and/or command-line options, validated before anything runs."""
    from pfd_atomate.config import ConfigError, load_config

    data: dict = {}
    base = None
    if config_file is not None:
        if not config_file.is_file():
            _fail(f"config file not found: {config_file}")
        import yaml

        text = config_file.read_text()
        data = json.loads(text) if config_file.suffix == ".json" else (yaml.safe_load(text) or {})
        if not isinstance(data, dict):
            _fail(f"{config_file}: a PFD configuration is a mapping of settings")
        base = config_file.resolve().parent
    if structure:
        data["structures"] = [str(p.resolve()) for p in structure]
    if run_dir is not None:
        data["run_dir"] = str(run_dir)
    if workers is not None:
        data["workers"] = workers
    if "structures" not in data:
        _fail("give a configuration file or --structure FILE")
    try:
        config = load_config(data)
        structures = config.load_structures(base)
        maker = config.build()
        flow = maker.make(structures)
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        _fail(f"invalid configuration{'' if config_file is None else f' {config_file}'}:\n{err}")
    run = config.run_dir if config.run_dir.is_absolute() or base is None else base / config.run_dir
    return config, flow, run


@app.command()
def run(
    config_file: Annotated[Optional[Path], typer.Argument(help="YAML/JSON configuration")] = None,
    structure: Annotated[list[Path], typer.Option("--structure", "-s", help="structure file(s)")] = [],  # noqa: B006
    run_dir: Annotated[Optional[Path], typer.Option(help="run folder (overrides the config)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="parallel single-threaded workers")] = None,
) -> None:
    """Run a PFD flow on the embedded store; an existing run folder is resumed."""
    from pfd_atomate.cli.progress import ProgressPrinter
    from pfd_atomate.workflows.local import RunLockedError, RunMismatchError, run_flow

    config, flow, folder = _load(config_file, structure, run_dir, workers)
    console.print(f"PFD run in [bold]{folder}[/bold] with {config.workers} worker(s)")
    try:
        with ProgressPrinter(console) as progress:
            result = run_flow(flow, folder, workers=config.workers, on_progress=progress)
    except (RunLockedError, RunMismatchError) as err:
        _fail(str(err))
    if not result.completed:
        _fail(f"the run ended {result.state}; failed jobs:\n" + "\n".join(f"  {k}: {v}" for k, v in result.failed.items()),
              code=1)
    console.print(f"[green]finished[/green] in {result.wall_time_s:.0f} s"
                  + (f" (resumed; {len(result.rerun)} lost jobs run again)" if result.resumed else ""))
    _print_status(folder)


@app.command()
def submit(
    config_file: Annotated[Path, typer.Argument(help="YAML/JSON configuration")],
    fireworks: Annotated[bool, typer.Option("--fireworks", help="add to a FireWorks LaunchPad")] = False,
    jobflow_remote: Annotated[bool, typer.Option("--jobflow-remote", help="submit to jobflow-remote")] = False,
    launchpad: Annotated[Optional[Path], typer.Option(help="my_launchpad.yaml (default: FireWorks' own)")] = None,
    worker: Annotated[Optional[str], typer.Option(help="jobflow-remote worker")] = None,
    project: Annotated[Optional[str], typer.Option(help="jobflow-remote project")] = None,
) -> None:
    """Submit a PFD flow to FireWorks or jobflow-remote (the workers' JobStore holds the results)."""
    if fireworks == jobflow_remote:
        _fail("choose exactly one of --fireworks and --jobflow-remote")
    _, flow, _ = _load(config_file, [], None, None)
    if fireworks:
        from fireworks import LaunchPad

        from pfd_atomate.workflows.fireworks import submit_flow

        lp = LaunchPad.from_file(str(launchpad)) if launchpad else LaunchPad.auto_load()
        ids = submit_flow(flow, lp, None)
        console.print(f"added PFD flow {flow.uuid} to FireWorks: {len(ids)} fireworks (first id {min(ids.values())})")
    else:
        from jobflow_remote import submit_flow as jfr_submit

        jfr_submit(flow, worker=worker, project=project)
        console.print(f"submitted PFD flow {flow.uuid} to jobflow-remote")


@app.command("repair-launchpad")
def repair_launchpad(
    launchpad: Annotated[Optional[Path], typer.Option("--launchpad", "-l",
                                                      help="my_launchpad.yaml (default: FireWorks' own)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print what would be repaired")] = False,
) -> None:
    """After a FireWorks launcher was killed, with no launcher alive: release workflow locks, delete fireworks
    that no workflow lists, and mark RUNNING a completed firework whose workflow update was cut short. Then run
    `lpad detect_lostruns --time 0 --rerun --refresh` and start the launchers (docs/workflows.md)."""
    from fireworks import LaunchPad

    from pfd_atomate.workflows.fireworks_repair import repair_launchpad as repair

    lp = LaunchPad.from_file(str(launchpad)) if launchpad else LaunchPad.auto_load()
    console.print_json(repair(lp, dry_run=dry_run).model_dump_json())


def _print_status(folder: Path) -> None:
    from collections import Counter

    from pfd_atomate import queries
    from pfd_atomate.cli.progress import describe, iteration_table
    from pfd_atomate.workflows.local import attach_run, job_states

    with attach_run(folder) as (store, lp, record):
        states = job_states(lp, record)
        rows = queries.iteration_tests(store, record["flow_uuid"])
        labels = queries.label_jobs(store, record["flow_uuid"])
        try:
            report = queries.run_report(store, record["flow_uuid"])
        except LookupError:
            report = None
    counts = Counter(s for s, _, _ in states.values())
    console.print(f"run {record['flow_uuid']} in {folder}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    labelled = sum(d["output"]["n_labelled"] for d in labels)
    reused = sum(d["output"].get("n_reused", 0) for d in labels)
    console.print(f"DFT labels: {labelled} in {len(labels)} labellings ({labelled - reused} paid, {reused} reused)")
    if rows:
        console.print(iteration_table(rows))
    running = sorted(name for s, name, _ in states.values() if s == "RUNNING")
    console.print(describe(states) if running else "nothing running")
    if report is not None:
        test = report.get("student_teacher_test") or {}
        console.print(f"finished: {report['n_iterations']} iterations, converged: {report['converged']}"
                      + (f"; student vs teacher force RMSE {1000 * test['force_rmse']:.1f} meV/Å" if test else ""))


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="run folder")]) -> None:
    """Iterations so far, labels spent, RMSE per iteration, what is running."""
    try:
        _print_status(run_dir)
    except FileNotFoundError as err:
        _fail(str(err))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default: RUN/report)")] = None,
    held_out: Annotated[Optional[Path], typer.Option(help="independent labelled frames (.json[.gz])")] = None,
) -> None:
    """Write report.json and plots: parity, RMSE per iteration, labels per iteration (PNG)."""
    from pfd_atomate.cli.report import write_report
    from pfd_atomate.workflows.local import attach_run

    try:
        with attach_run(run_dir) as (store, _, record):
            path = write_report(store, record["flow_uuid"], out or run_dir / "report", held_out)
    except (FileNotFoundError, LookupError) as err:
        _fail(str(err))
    summary = json.loads(path.read_text())
    console.print(f"wrote {path} and {', '.join(summary['plots'])}")
    for role in ("teacher", "student"):
        m = summary["held_out"].get(role)
        if m:
            console.print(f"{m['model']}: {1000 * m['energy_rmse_ev_per_atom']:.2f} meV/atom, "
                          f"{1000 * m['force_rmse_ev_per_a']:.1f} meV/Å on {m['n_frames']} held-out frames "
                          f"({summary['held_out']['source']})")


@app.command()
def models(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    role: Annotated[str, typer.Option(help="teacher or student")] = "student",
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the model file into")] = Path("."),
) -> None:
    """Fetch a model file out of the store (SHA-256 checked against the run's report)."""
    from pfd_atomate import queries
    from pfd_atomate.store import fetch_model
    from pfd_atomate.workflows.local import attach_run

    if role not in ("teacher", "student"):
        _fail(f"--role must be 'teacher' or 'student', got {role!r}")
    try:
        with attach_run(run_dir) as (store, _, record):
            report = queries.run_report(store, record["flow_uuid"])
            entry = next((m for m in report["lineage"] if m["role"] == role and m.get("location")), None)
            if entry is None:
                _fail(f"the run has no {role} model")
            model = fetch_model(store, entry["location"]["job_uuid"], entry["location"]["field"])
    except (FileNotFoundError, LookupError) as err:
        _fail(str(err))
    if model.sha256 != entry["sha256"]:
        _fail(f"stored {role} model {model.sha256[:12]} differs from the report's {entry['sha256'][:12]}: refused")
    path = model.materialize(out)
    console.print(f"{role}: {path} ({model.backend}, {model.size_bytes} bytes, sha256 {model.sha256})")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the configuration."""
    from pfd_atomate.config import PFDConfig

    typer.echo(json.dumps(PFDConfig.model_json_schema(), indent=1))


@config_app.command("example")
def config_example() -> None:
    """Print a complete configuration with every default and a comment per key."""
    from pfd_atomate.config import example_config

    typer.echo(example_config(), nl=False)


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(help="smoke run: fewer labels, steps and epochs")] = False,
    run_dir: Annotated[Optional[Path], typer.Option(help="run folder (default runs/demo-si[-quick])")] = None,
    workers: Annotated[int, typer.Option(help="parallel single-threaded workers")] = 2,
    teacher: Annotated[str, typer.Option(help="foundation model: dpa4 or chgnet")] = "dpa4",
) -> None:
    """The PFD demo: diamond Si, CP2K labels, DPA-4 fine-tuned, distilled into a compressed se_e2_a student."""
    from pfd_atomate.cli.demo import run_demo
    from pfd_atomate.cli.progress import ProgressPrinter

    folder = (run_dir or Path("runs") / ("demo-si-quick" if quick else "demo-si")).resolve()
    try:
        with ProgressPrinter(console) as progress:
            result = run_demo(folder, quick=quick, workers=workers, teacher=teacher, on_progress=progress)
    except (RuntimeError, ValueError) as err:
        _fail(str(err), code=1)
    console.print_json(json.dumps({k: result[k] for k in ("dft_labels_spent", "iterations",
                                                          "PF_teacher_on_held_out_dft", "PFD_student_on_held_out_dft",
                                                          "wall_time_s")}))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
