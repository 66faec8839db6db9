"""Decisions of the fine-tune loop job (no training: the replacement flows are inspected)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from jobflow import Flow, Response
from pymatgen.core import Lattice, Structure

from pfd_atomate.data import Dataset, Frame, ModelFile
from pfd_atomate.evaluate.schemas import ConvergenceCriteria
from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.finetune.jobs import FinetuneMaker, finetune_step
from pfd_atomate.finetune.schemas import FinetuneOutput, LoopState
from pfd_atomate.train.base import TrainerBackend

step = finetune_step.original


@dataclass
class NoTrainBackend(TrainerBackend):
    """A backend that must never be asked to compute in these tests."""

    name: str = "none"

    def check_elements(self, elements, model=None):
        return None

    def train(self, *a, **k):
        raise AssertionError("no training in decision tests")

    def predict(self, *a, **k):
        raise AssertionError("no prediction in decision tests")

    def calculator(self, *a, **k):
        raise AssertionError

    def force_field_spec(self, *a, **k):
        raise AssertionError


@pytest.fixture
def structure():
    return Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.fixture
def maker():
    return FinetuneMaker(
        trainer=NoTrainBackend(),
        stages=[
            Stage(task_groups=[TaskGroup(temperatures=[300, 600], ensemble="nvt", n_steps=10)]),
            Stage(task_groups=[TaskGroup(temperatures=[900], pressures=[0.0, 1.0], ensemble="npt", n_steps=10)]),
        ],
        criteria=ConvergenceCriteria(energy_rmse=0.01, force_rmse=0.1, accurate_ratio=None),
        max_iterations=2,
        init_from="previous",
    )


def _model(tmp_path) -> ModelFile:
    p = tmp_path / "m.bin"
    p.write_bytes(b"model")
    return ModelFile.from_path(p, backend="none")


def _report(converged: bool, n_added: int, eval_uuid: str = "eval-1", n_labelled: int = 4, n_requested: int = 4):
    return {
        "model_sha256": "abc",
        "n_train_frames": 10,
        "n_candidates": 20,
        "n_selected": n_requested,
        "n_requested": n_requested,
        "n_labelled": n_labelled,
        "metrics": {"energy_rmse": 0.002 if converged else 0.05, "force_rmse": 0.05 if converged else 0.4,
                    "accurate_ratio": 1.0 if converged else 0.0},
        "converged": converged,
        "reason": "test",
        "n_added": n_added,
        "label_job": "label-1",
        "evaluate_job": eval_uuid,
    }


def _names(flow: Flow) -> list[str]:
    return [j.name for j in flow.jobs]


def test_first_call_builds_train_explore_select_label_test(maker, structure):
    state = LoopState(train_refs=[("init-job", [["a", "dataset"]])])
    resp = step(maker, [structure, structure], state)
    assert isinstance(resp, Response)
    names = _names(resp.replace)
    assert names[0].startswith("pfd train s0 i0")
    # 2 temperatures x 2 structures in stage 0
    assert sum(n.startswith("pfd explore s0 i0") for n in names) == 4
    assert any(n.startswith("pfd select") for n in names)
    assert any(n.startswith("pfd label") for n in names)
    assert any(n.startswith("pfd test") for n in names)
    assert names[-1].endswith("decide")
    train = resp.replace.jobs[0]
    assert train.function_args[0][0].uuid == "init-job"
    assert train.function_kwargs["init_model"] is None  # nothing to restart from yet


def test_not_converged_adds_trust_window_frames_and_retrains_from_previous(maker, structure, tmp_path):
    state = LoopState(train_refs=[("init-job", [["a", "dataset"]])], model_job="train-0", n_sets_trained=1)
    resp = step(maker, [structure], state, model=_model(tmp_path), test_set=Dataset(), report=_report(False, 3))
    flow = resp.replace
    train = flow.jobs[0]
    assert train.name.startswith("pfd train s0 i1")
    refs = train.function_args[0]
    assert [r.uuid for r in refs] == ["init-job", "eval-1"]
    assert refs[1].attributes == (("a", "added"),)
    assert train.function_kwargs["init_model"].uuid == "train-0"  # restart from M_{i-1}
    decide = flow.jobs[-1]
    new_state = decide.function_args[2]
    assert new_state.stage == 0 and new_state.stage_iteration == 1 and new_state.iteration == 1
    assert len(new_state.history) == 1 and not new_state.history[0].converged
    assert new_state.n_dft_labels == 4


def test_converged_stage_moves_on_without_retraining(maker, structure, tmp_path):
    state = LoopState(train_refs=[("init-job", [["a", "dataset"]])], model_job="train-0", n_sets_trained=1)
    resp = step(maker, [structure], state, model=_model(tmp_path), test_set=Dataset(), report=_report(True, 3))
    names = _names(resp.replace)
    assert not any(n.startswith("pfd train") for n in names), "converged: M_i is carried to the next stage"
    # stage 1: 1 temperature x 2 pressures (npt)
    assert sum(n.startswith("pfd explore s1 i1") for n in names) == 2


def test_last_stage_converged_returns_final_output(maker, structure, tmp_path):
    hist_state = LoopState(stage=1, iteration=3, stage_iteration=0, train_refs=[("init-job", [["a", "dataset"]])],
                           model_job="train-2", n_sets_trained=1, n_dft_labels=8, converged_stages=[True])
    held_out = Dataset(frames=[Frame(species=["Cu"], positions=[[0, 0, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 3]],
                                     energy=-1.0, forces=[[0, 0, 0]])])
    out = step(maker, [structure], hist_state, model=_model(tmp_path), test_set=held_out,
               report=_report(True, 0, n_labelled=3, n_requested=4))
    assert isinstance(out, FinetuneOutput)
    assert out.converged and out.converged_stages == [True, True]
    assert out.n_dft_labels == 11 and out.n_iterations == 4
    assert out.iterations[-1].n_label_failures == 1
    assert out.test_set.n_frames == 1 and out.model_job == "train-2"


def test_out_of_iterations_fails_or_continues(maker, structure, tmp_path):
    state = LoopState(stage=0, iteration=1, stage_iteration=1, train_refs=[("init-job", [["a", "dataset"]])],
                      model_job="train-1", n_sets_trained=1)
    maker.on_not_converged = "fail"
    with pytest.raises(RuntimeError, match="did not converge in 2 iterations"):
        step(maker, [structure], state, model=_model(tmp_path), test_set=Dataset(), report=_report(False, 2))
    maker.on_not_converged = "continue"
    resp = step(maker, [structure], state, model=_model(tmp_path), test_set=Dataset(), report=_report(False, 2))
    names = _names(resp.replace)
    # moves to stage 1, retraining on the frames added from the last iteration
    assert names[0].startswith("pfd train s1 i2")
    assert resp.replace.jobs[-1].function_args[2].converged_stages == [False]


def test_make_rejects_missing_pieces(structure):
    with pytest.raises(ValueError, match="trainer"):
        FinetuneMaker(trainer=None, stages=[Stage(task_groups=[TaskGroup(temperatures=[300])])]).make(
            structure, [Dataset()]
        )
    with pytest.raises(ValueError, match="stage"):
        FinetuneMaker(trainer=NoTrainBackend(), stages=[]).make(structure, [Dataset()])
