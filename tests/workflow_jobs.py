"""Shared pieces of the workflow-manager tests (FireWorks, jobflow-remote, resume).

Importable (tests/ is put on ``PYTHONPATH`` of the launcher and runner processes), because
FireWorks and jobflow-remote workers import job functions and calculators by module name.
Heavy imports stay inside functions: every launcher process imports this module.

The PFD settings here are the smallest that still run every PFD step and iterate twice:
two exploration stages with one iteration each (``max_iterations=1``, ``"continue"``), so the
loop job is replaced exactly twice whatever the test RMSEs are; EMT labels through atomate2's
``ForceFieldStaticMaker``; CHGNet teacher with one epoch; a deepmd-kit ``se_e2_a`` student with
a few dozen steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from ase.calculators.emt import EMT
from jobflow import job

TESTS_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
N_INITIAL_FRAMES = 3
N_SELECT = 2
N_LOOP_ITERATIONS = 2


class DelayedEMT(EMT):
    """EMT that also waits ``delay`` seconds per calculation.

    Stands in for the cost of a DFT label, so that label jobs on parallel launchers visibly
    overlap in time (a bare EMT label finishes in ~0.1 s, faster than a launcher polls).
    """

    def __init__(self, delay: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, *args, **kwargs):
        time.sleep(self.delay)
        super().calculate(*args, **kwargs)


class CountingEMT(DelayedEMT):
    """DelayedEMT that appends one line per *finished* label to ``log`` (a DFT label paid).

    EMT computes energy, forces and stress in the static job's first call (each call waits
    ``delay`` first), so that is when the line is written. A label killed before leaves no
    line: the file counts the labels that were actually computed, across processes and restarts.
    """

    def __init__(self, log: str, delay: float = 1.0, **kwargs):
        super().__init__(delay=delay, **kwargs)
        self.log = log
        self._counted: set[str] = set()

    def calculate(self, atoms=None, properties=("energy",), *args, **kwargs):
        super().calculate(atoms, properties, *args, **kwargs)
        import hashlib

        digest = hashlib.sha1(self.atoms.positions.round(6).tobytes()).hexdigest()[:16]
        if "energy" in properties and digest not in self._counted:
            self._counted.add(digest)
            with open(self.log, "a") as fh:
                fh.write(f"{digest} {os.getpid()}\n")


def emt_spec(delay: float | None = None, count_log: str | Path | None = None) -> tuple[dict, dict]:
    """``(force_field_name, calculator_kwargs)`` of the EMT labeller (``delay``: see DelayedEMT;
    ``count_log``: see CountingEMT)."""
    if count_log is not None:
        return {"@module": "workflow_jobs", "@callable": "CountingEMT"}, {"log": str(count_log), "delay": delay or 0.0}
    if delay is None:
        return {"@module": "ase.calculators.emt", "@callable": "EMT"}, {}
    return {"@module": "workflow_jobs", "@callable": "DelayedEMT"}, {"delay": delay}


def cu_cell():
    """8-atom fcc Cu (EMT knows Cu; CHGNet and deepmd handle it)."""
    from pymatgen.core import Lattice, Structure

    fcc = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return fcc * (2, 1, 1)


def tiny_pfd_maker(distill: bool = True, label_delay: float | None = None, count_log: str | Path | None = None):
    """The smallest complete PFD configuration: perturb → label → 2 loop iterations → distill → report."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    from pfd_atomate.distill.flows import DistillMaker
    from pfd_atomate.evaluate.schemas import ConvergenceCriteria
    from pfd_atomate.explore.schemas import Stage, TaskGroup
    from pfd_atomate.finetune.jobs import FinetuneMaker
    from pfd_atomate.flows import PFDMaker
    from pfd_atomate.label.flows import LabelMaker
    from pfd_atomate.perturb.jobs import PerturbMaker
    from pfd_atomate.select.jobs import SelectMaker
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    force_field, kwargs = emt_spec(label_delay, count_log)
    teacher = CHGNetBackend(epochs=1, batch_size=4, learning_rate=2e-3, seed=0, n_threads=1)
    group = TaskGroup(temperatures=[600.0], ensemble="nvt", n_steps=20, time_step=2.0, traj_interval=4)
    return PFDMaker(
        perturb=PerturbMaker(n_frames=N_INITIAL_FRAMES, cell_pert_fraction=0.02, atom_pert_distance=0.08, seed=3),
        label=LabelMaker(
            static_maker=ForceFieldStaticMaker(force_field_name=force_field, calculator_kwargs=kwargs),
            min_success_ratio=0.5,
        ),
        finetune=FinetuneMaker(
            trainer=teacher,
            stages=[
                Stage(task_groups=[group]),
                Stage(task_groups=[group.model_copy(update={"temperatures": [900.0]})]),
            ],
            select=SelectMaker(n_select=N_SELECT, method="random", seed=0),
            criteria=ConvergenceCriteria(energy_rmse=0.02, force_rmse=0.25, accurate_ratio=None),
            max_iterations=1,
            on_not_converged="continue",
            init_from="previous",
        ),
        distill=DistillMaker(
            student=DeepMDBackend(template="se_e2_a", numb_steps=30, rcut=4.5, rcut_smth=0.5, seed=0, n_threads=1),
            task_groups=[TaskGroup(temperatures=[700.0], ensemble="nvt", n_steps=20, time_step=2.0, traj_interval=2)],
            perturb=None,  # MD frames only (the default's rattled frames run in test_pfd_flow and the CLI run)
            test_fraction=0.3,
        )
        if distill
        else None,
    )


def is_ml_job(name: str) -> bool:
    """Training, MD or model-evaluation job (what ``ML_JOBS`` routes)."""
    from pfd_atomate.workflows import ML_JOBS

    return any(f in name for f in ML_JOBS)


def is_static_label(name: str) -> bool:
    """One static (labelling) calculation, not the fan-out or the collector."""
    return name.startswith("pfd label ") and "static" in name


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of launcher/runner processes: tests importable, one thread per worker, venv first on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    # parallel workers on a 2-core machine: one thread each, no oversubscription
    env["OMP_NUM_THREADS"] = "1"
    # model files rebuilt by workers go to a scratch cache, not the user's
    env.setdefault("PFD_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "pfd-test-model-cache"))
    env.update(extra or {})
    return env


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a process we started (SIGKILL when it does not exit): the local engine's own helper."""
    from pfd_atomate.workflows.local import stop_process as stop

    stop(process, timeout)


def start_launcher(
    workdir: Path, launchpad_file: Path, fworker_file: Path, until_done: bool = False
) -> subprocess.Popen:
    """Start ``rlaunch rapidfire`` in ``workdir`` (log: ``workdir/rlaunch.log``).

    ``until_done=False`` keeps the launcher polling (``--nlaunches infinite``): a launcher
    that sees no ready job while another launcher runs the loop job must not quit, because
    the loop adds the next iteration's jobs only when it finishes. Stop it with
    :func:`stop_process`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "rlaunch"), "-l", str(launchpad_file), "-w", str(fworker_file), "rapidfire", "--sleep", "1"]
    if not until_done:
        cmd += ["--nlaunches", "infinite"]
    log = open(workdir / "rlaunch.log", "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=worker_env())


class SubmittedFlow(NamedTuple):
    """A flow on a fresh LaunchPad (:func:`submit_to_fireworks`)."""

    lp: object  # fireworks.LaunchPad
    store: object  # jobflow.JobStore, the MongoDB JobStore the launchers write
    first: int  # fw_id of one firework of the workflow (finds it)
    launchpad_file: Path  # my_launchpad.yaml for rlaunch / lpad / pfd repair-launchpad
    fworker_file: Path | None  # my_fworker.yaml, when a worker name was given


def submit_to_fireworks(server, folder: Path, name: str, flow, fworker: str | None = None) -> SubmittedFlow:
    """Reset LaunchPad ``name`` on ``server``, submit ``flow`` with JobStore ``<name>_out`` and write
    ``folder/my_launchpad.yaml`` (and ``folder/my_fworker.yaml`` for worker ``fworker`` when given)."""
    from pfd_atomate.workflows.fireworks import launchpad, submit_flow, write_fworker_file, write_launchpad_file

    lp = launchpad(server.host, server.port, name=name)
    lp.reset("", require_password=False)
    store = server.jobstore(f"{name}_out")
    first = min(submit_flow(flow, lp, store).values())
    lp_file = write_launchpad_file(folder / "my_launchpad.yaml", server.host, server.port, name)
    fworker_file = None if fworker is None else write_fworker_file(folder / "my_fworker.yaml", fworker)
    return SubmittedFlow(lp, store, first, lp_file, fworker_file)


def run_checked(*cmd) -> subprocess.CompletedProcess:
    """Run a command line (``lpad``, ``pfd``, ...) as a worker would (:func:`worker_env`); raise if it fails."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=worker_env(), timeout=300,
                          check=True)


def recover_launchpad(launchpad_file: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The FireWorks recovery of docs/workflows.md after a launcher was killed (none alive): ``pfd
    repair-launchpad``, then ``lpad detect_lostruns --time 0 --rerun --refresh``; both returned (their
    outputs say what they found). A new launcher then finishes the flow."""
    repair = run_checked(BIN / "pfd", "repair-launchpad", "-l", launchpad_file)
    return repair, run_checked(BIN / "lpad", "-l", launchpad_file, "detect_lostruns", "--time", "0", "--rerun",
                               "--refresh")


def start_runner(log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a jobflow-remote runner in the foreground (``jf runner run``) as a child process."""
    log = open(log_path, "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen([str(BIN / "jf"), "runner", "run"], stdout=log, stderr=subprocess.STDOUT, env=env)


@job(data=["model"])
def make_big_model(size_mb: float, seed: int = 0) -> dict:
    """A job whose output holds a ``ModelFile`` of ``size_mb`` MiB of random bytes (GridFS round trip)."""
    import numpy as np

    from pfd_atomate.data import ModelFile

    raw = np.random.default_rng(seed).bytes(int(size_mb * 2**20))
    path = Path(f"big-model-{seed}.bin")
    path.write_bytes(raw)
    model = ModelFile.from_path(path, backend="none", kind="scratch")
    return {"model": model, "sha256": model.sha256, "size_bytes": len(raw)}


@job
def check_big_model(model: dict, sha256: str) -> int:
    """Rebuild the model file from the store on the worker; return its size (bytes).

    Raises
    ------
    ValueError: the bytes that came back do not match ``sha256``.
    """
    from pfd_atomate.data import as_model_file

    mf = as_model_file(model)
    if mf.sha256 != sha256:
        raise ValueError("model came back with another sha256")
    return len(mf.to_bytes())


@job
def hold(seconds: float) -> float:
    """Sleep ``seconds``: a job whose only cost is the engine's."""
    time.sleep(seconds)
    return seconds
