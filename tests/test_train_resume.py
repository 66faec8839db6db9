"""A deepmd-kit training killed part-way continues from its last checkpoint, and only with the same inputs.

The kill is real: the process that trains (a script, or ``pfd run``'s FireWorks worker) is SIGKILLed
once a checkpoint exists, and its ``dp`` child dies with it. Labels come from ASE's EMT potential
for fcc Cu (tests/_labelled_data.py), so the resumed model must still learn a real surface.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("deepmd.pt")

from _labelled_data import emt_dataset  # noqa: E402
from workflow_jobs import TESTS_DIR, wait_for, worker_env  # noqa: E402

from pfd_atomate.train import deepmd_checkpoints as checkpoints  # noqa: E402
from pfd_atomate.train.deepmd import DeepMDBackend  # noqa: E402

N_STEPS, SAVE_FREQ = 400, 20
#: the settings of every training here (the killed scripts and the tests build the backend alike)
SETTINGS = {"template": "se_e2_a", "numb_steps": N_STEPS, "save_freq": SAVE_FREQ, "disp_freq": 10, "rcut": 5.0,
            "n_threads": 1}
#: trains DeepMDBackend(**argv[2]) on emt_dataset(**argv[3]) (JSON) in the folder argv[1]
TRAIN_SCRIPT = """
import json
import sys
from pathlib import Path
from _labelled_data import emt_dataset
from pfd_atomate.train.deepmd import DeepMDBackend
DeepMDBackend(**json.loads(sys.argv[2])).train([emt_dataset(**json.loads(sys.argv[3]))], Path(sys.argv[1]))
"""


def _lcurve_steps(workdir) -> list[int]:
    return [int(line.split()[0]) for line in (workdir / "lcurve.out").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _kill_after_first_checkpoint(process: subprocess.Popen, workdir, what: str) -> int:
    """SIGKILL ``process`` once deepmd-kit has published a checkpoint in ``workdir``; its step."""
    try:
        # the pointer file is written after the checkpoint it names: that one is complete
        wait_for(lambda: (workdir / "checkpoint").is_file() or process.poll() is not None, timeout=600,
                 interval=0.05, what=what)
        assert process.poll() is None, f"{what}: the training ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.5)  # the dp child died with its parent (PR_SET_PDEATHSIG)
    found = checkpoints.latest_checkpoint(workdir)
    assert found is not None
    return found[1]


def _train_and_kill(workdir, settings: dict, frames: dict) -> int:
    """Train in a child process, SIGKILLed after its first checkpoint; the step it can continue from."""
    process = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(workdir), json.dumps(settings),
                                json.dumps(frames)], env=worker_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    return _kill_after_first_checkpoint(process, workdir, "the first checkpoint")


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A 400-step se_e2_a training SIGKILLed after its first checkpoint, then trained again in its folder."""
    workdir = tmp_path_factory.mktemp("resume") / "train"
    killed_at = _train_and_kill(workdir, SETTINGS, {"n_frames": 20, "seed": 0})
    steps_before = _lcurve_steps(workdir)
    backend = DeepMDBackend(**SETTINGS)
    model = backend.train([emt_dataset(20, seed=0)], workdir)
    return backend, model, workdir, killed_at, steps_before


def test_killed_training_continues_from_its_checkpoint(killed_and_resumed):
    backend, model, workdir, killed_at, steps_before = killed_and_resumed
    assert SAVE_FREQ <= killed_at < N_STEPS
    assert backend.resumed_from_step(workdir) == killed_at
    assert f"Resuming from model.ckpt-{killed_at}.pt" in (workdir / "dp_train.log").read_text()
    steps = _lcurve_steps(workdir)
    # the learning curve goes on where it stopped: the first attempt's lines kept, no second start at step 1
    assert steps[: len(steps_before)] == steps_before and steps.count(1) == 1
    resumed = steps[len(steps_before):]
    # deepmd-kit 3.2 stores step N - 1 in the checkpoint of step N and trains that step again: its line is N
    assert resumed[0] == killed_at and resumed[-1] == N_STEPS
    assert resumed == sorted(set(resumed)) and len(resumed) == (N_STEPS - killed_at) // 10 + 1


def test_resumed_model_learned_the_surface(killed_and_resumed):
    backend, model, _, _, _ = killed_and_resumed
    test = emt_dataset(6, seed=99)
    pred = backend.predict(model, test)
    forces = np.concatenate([np.asarray(f.forces) for f in test])
    error = np.concatenate([np.asarray(p.forces) for p in pred]) - forces
    rmse, baseline = float(np.sqrt(np.mean(error**2))), float(np.sqrt(np.mean(forces**2)))
    print(f"force RMSE after resume {rmse:.3f} eV/Å, zero-force {baseline:.3f} eV/Å")
    assert rmse < 0.5 * baseline


def test_finished_training_is_not_run_again(killed_and_resumed):
    backend, model, workdir, _, _ = killed_and_resumed
    log = (workdir / "dp_train.log").stat().st_mtime_ns
    lcurve = (workdir / "lcurve.out").read_text()
    again = backend.train([emt_dataset(20, seed=0)], workdir)  # as if killed while freezing
    assert backend.resumed_from_step(workdir) == N_STEPS
    assert (workdir / "dp_train.log").stat().st_mtime_ns == log and (workdir / "lcurve.out").read_text() == lcurve
    test = emt_dataset(2, seed=7)
    np.testing.assert_allclose([p.energy for p in backend.predict(again, test)],
                               [p.energy for p in backend.predict(model, test)], rtol=0, atol=1e-8)


def test_other_inputs_start_over_without_the_old_checkpoints(killed_and_resumed, tmp_path):
    """Another seed, or other frames, in the same folder: the old checkpoints are not trained on."""
    _, _, workdir, _, _ = killed_and_resumed
    other = DeepMDBackend(template="se_e2_a", numb_steps=40, save_freq=20, disp_freq=10, rcut=5.0, n_threads=1,
                          seed=2)
    other.train([emt_dataset(20, seed=0)], workdir)
    assert other.resumed_from_step(workdir) is None
    assert _lcurve_steps(workdir) == [1, 10, 20, 30, 40]
    assert not (workdir / f"model.ckpt-{N_STEPS}.pt").exists()
    # the same settings on other frames: input.json is the same, the fingerprint (of the data too) is not
    elsewhere = tmp_path / "other-frames"
    other.write_inputs([emt_dataset(20, seed=1)], elsewhere)
    assert (elsewhere / "input.json").read_text() == (workdir / "input.json").read_text()
    assert checkpoints.training_fingerprint(elsewhere, None, None) != checkpoints.stored_fingerprint(workdir)
    assert checkpoints.training_fingerprint(workdir, None, None) == checkpoints.stored_fingerprint(workdir)


RUN_SCRIPT = f"""
import json
import sys
from _labelled_data import emt_dataset
from pfd_atomate.train.deepmd import DeepMDBackend
from pfd_atomate.train.jobs import TrainMaker
from pfd_atomate.workflows.local import run_flow
flow = TrainMaker(backend=DeepMDBackend(**{SETTINGS!r})).make([emt_dataset(20, seed=0)])
run = run_flow(flow, sys.argv[1], workers=1, env={{"PYTHONPATH": sys.argv[2]}}, worker_sleep=1)
print("RESULT", json.dumps({{"completed": run.completed, "resumed": run.resumed, "rerun": run.rerun}}))
"""


def test_a_resumed_pfd_run_continues_its_lost_training(tmp_path):
    """``pfd run``'s engine: the run SIGKILLed while its training job trains, then resumed. The rerun
    continues in the run folder's ``training/`` from the checkpoint (a FireWorks rerun has a new launch
    folder), and the job's output says so."""
    from pfd_atomate.workflows.local import open_run_store

    run_dir = tmp_path / "run"
    script = RUN_SCRIPT
    env = worker_env()
    env.pop("PFD_TRAIN_CHECKPOINT_DIR", None)
    process = subprocess.Popen([sys.executable, "-c", script, str(run_dir), str(TESTS_DIR)], env=env,
                               stdout=open(tmp_path / "killed.log", "w"), stderr=subprocess.STDOUT)
    wait_for(lambda: any((run_dir / "training").glob("*/input.json")) or process.poll() is not None,
             timeout=600, interval=0.2, what="the training job")
    (folder,) = (run_dir / "training").iterdir()
    killed_at = _kill_after_first_checkpoint(process, folder, "the training job's first checkpoint")

    resumed = subprocess.run([sys.executable, "-c", script, str(run_dir), str(TESTS_DIR)], env=env,
                             capture_output=True, text=True, timeout=900)
    lines = [line for line in resumed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, resumed.stdout + resumed.stderr
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["completed"] and result["resumed"], result
    assert len(result["rerun"]) == 1 and "pfd train" in result["rerun"][0], result
    with open_run_store(run_dir) as (store, _, _):
        job_uuid = json.loads((run_dir / "run.json").read_text())["flow_uuid"]  # a lone job: the run's own uuid
        (doc,) = list(store.query({"uuid": job_uuid}, properties=["output"]))
    output = doc["output"]
    assert output["resumed_from_step"] == killed_at and output["training_dir"] == str(folder.resolve())
    assert _lcurve_steps(folder)[-1] == N_STEPS and _lcurve_steps(folder).count(1) == 1
    # both launches show the training: each launch folder's `train` links to the one folder
    links = sorted((run_dir / "workers").glob("*/launcher_*/train"))
    assert len(links) == 2 and all(link.is_symlink() and link.resolve() == folder.resolve() for link in links)


def test_killed_dpa4_fine_tune_continues_without_fine_tuning_again(tmp_path):
    """The PFD loop's trainings fine-tune DPA-4: continued from the checkpoint (``--restart``, not a second
    ``--finetune`` from the foundation model), the model keeps its lineage and the learning curve goes on."""
    from pfd_atomate.train import foundation

    try:
        foundation.resolve("dpa4-neo")
    except ConnectionError as err:
        pytest.skip(f"the DPA-4 checkpoint cannot be fetched here: {err}")
    settings = {"base_model": "dpa4-neo", "numb_steps": 12, "batch_size": 1, "start_lr": 3e-5, "stop_lr": 1e-6,
                "n_threads": 1, "disp_freq": 2, "save_freq": 2}
    frames = {"n_frames": 4, "seed": 0, "supercell": [2, 1, 1], "displacement": 0.1}
    workdir = tmp_path / "ft"
    killed_at = _train_and_kill(workdir, settings, frames)
    assert 2 <= killed_at < 12
    backend = DeepMDBackend(**settings)
    model = backend.train([emt_dataset(**{**frames, "supercell": (2, 1, 1)})], workdir)
    assert backend.resumed_from_step(workdir) == killed_at
    log = (workdir / "dp_train.log").read_text()
    assert f"Resuming from model.ckpt-{killed_at}.pt" in log and log.count("Resuming from") == 1  # not the base
    assert (model.kind, model.parent_sha256) == ("finetuned", foundation.lookup("dpa4-neo").sha256)
    assert len(model.type_map) == 118
    steps = _lcurve_steps(workdir)
    assert steps.count(1) == 1 and steps[-1] == 12


def test_training_folder_is_the_jobs_own_and_stays_inside_the_setting(tmp_path, monkeypatch):
    """Every rerun of a job trains in one folder named by its uuid and index; a uuid read from a job
    document that would lead out of PFD_TRAIN_CHECKPOINT_DIR is refused, and a relative setting too."""
    from jobflow import CURRENT_JOB, Job

    from pfd_atomate.settings import PFDSettings
    from pfd_atomate.train.jobs import training_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PFD_TRAIN_CHECKPOINT_DIR", raising=False)
    job = Job(print, uuid="0f1e2d3c-aaaa-4bbb-8ccc-123456789abc", index=2)
    try:
        CURRENT_JOB.job = job
        assert training_dir() == tmp_path / "train"  # not set: the launch folder's own
        monkeypatch.setenv("PFD_TRAIN_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
        assert training_dir() == tmp_path / "ckpt" / "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc_2"
        for hostile in ("../../outside", "a/../../b", "..", ".hidden", "a..b"):
            CURRENT_JOB.job = Job(print, uuid=hostile, index=1)
            with pytest.raises(ValueError, match="cannot name a training folder"):
                training_dir()
    finally:
        CURRENT_JOB.reset()
    monkeypatch.setenv("PFD_TRAIN_CHECKPOINT_DIR", "relative/folder")
    with pytest.raises(ValueError, match="must be an absolute path"):
        PFDSettings()
