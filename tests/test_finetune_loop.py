"""Decisions of the fine-tune loop job (no training: the replacement flows are inspected)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from jobflow import Flow, OutputReference, Response
from pymatgen.core import Lattice, Structure

from pfd_atomate.data import Dataset
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


INIT = OutputReference("init-job", (("a", "dataset"),))


def _model_ref(train_uuid: str) -> OutputReference:
    return OutputReference(train_uuid, (("a", "model"),))


def _metrics(converged: bool) -> dict:
    e, f = (0.002, 0.05) if converged else (0.05, 0.4)
    return {"n_frames": 2, "energy_rmse": e, "energy_mae": e, "force_rmse": f, "force_mae": f,
            "frame_energy_error": [e, -e], "frame_force_rmse": [f, f], "frame_force_max": [f, f],
            "frame_energy_threshold": None, "frame_force_threshold": None,
            "accurate_ratio": 1.0 if converged else 0.0}


def _report(converged: bool, n_added: int, eval_uuid: str = "eval-1", n_labelled: int = 4, n_requested: int = 4):
    """An iteration report as the decision job sees it once its references are resolved."""
    return {
        "model_sha256": "abc",
        "n_train_frames": 10,
        "n_candidates": 20,
        "n_selected": n_requested,
        "n_requested": n_requested,
        "n_labelled": n_labelled,
        "metrics": _metrics(converged),
        "converged": converged,
        "reason": "test",
        "n_added": n_added,
        "label_job": "label-1",
        "evaluate_job": eval_uuid,
    }


def _names(flow: Flow) -> list[str]:
    return [j.name for j in flow.jobs]


def test_first_call_builds_train_explore_select_label_test(maker, structure):
    state = LoopState(train_sets=[INIT])
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
    # each job says what it is and where in the loop (jobflow metadata, for queries)
    assert {j.metadata["pfd_step"] for j in resp.replace.jobs} == {"train", "explore", "select", "label", "test",
                                                                  "decide"}
    assert all((j.metadata["stage"], j.metadata["iteration"]) == (0, 0) for j in resp.replace.jobs)
    # each MD task knows its input structure, and selection gets them in the candidates' order
    explores = [j for j in resp.replace.jobs if j.metadata["pfd_step"] == "explore"]
    assert [j.metadata["structure_index"] for j in explores] == [0, 1, 0, 1]
    select = next(j for j in resp.replace.jobs if j.metadata["pfd_step"] == "select")
    assert [r.uuid for r in select.function_args[0]] == [j.uuid for j in explores]
    assert select.function_kwargs["structure_indices"] == [0, 1, 0, 1]
    # the decision job keeps references as references: the next iteration resolves them
    decide = resp.replace.jobs[-1]
    assert decide.config.resolve_references is False
    assert decide.function_args[2].model.uuid == train.uuid


def test_not_converged_adds_trust_window_frames_and_retrains_from_previous(maker, structure, tmp_path):
    state = LoopState(train_sets=[INIT], model=_model_ref("train-0"), n_sets_trained=1)
    resp = step(maker, [structure], state, test_set=Dataset(), report=_report(False, 3))
    flow = resp.replace
    train = flow.jobs[0]
    assert train.name.startswith("pfd train s0 i1")
    refs = train.function_args[0]
    assert refs[0].uuid == "init-job"
    # the trust-window frames of D_i: indices from the test into the stored label set, no copy
    assert (refs[1].dataset.uuid, refs[1].dataset.attributes) == ("label-1", (("a", "dataset"),))
    assert (refs[1].indices.uuid, refs[1].indices.attributes) == ("eval-1", (("a", "added_indices"),))
    assert train.function_kwargs["init_model"].uuid == "train-0"  # restart from M_{i-1}
    decide = flow.jobs[-1]
    new_state = decide.function_args[2]
    assert new_state.stage == 0 and new_state.stage_iteration == 1 and new_state.iteration == 1
    assert len(new_state.history) == 1 and not new_state.history[0].converged
    assert new_state.n_dft_labels == 4


def test_converged_stage_moves_on_without_retraining(maker, structure, tmp_path):
    state = LoopState(train_sets=[INIT], model=_model_ref("train-0"), n_sets_trained=1)
    resp = step(maker, [structure], state, test_set=Dataset(), report=_report(True, 3))
    names = _names(resp.replace)
    assert not any(n.startswith("pfd train") for n in names), "converged: M_i is carried to the next stage"
    # stage 1: 1 temperature x 2 pressures (npt)
    assert sum(n.startswith("pfd explore s1 i1") for n in names) == 2


def test_last_stage_converged_returns_final_output(maker, structure, tmp_path):
    hist_state = LoopState(stage=1, iteration=3, stage_iteration=0, train_sets=[INIT], model=_model_ref("train-2"),
                           n_sets_trained=1, n_dft_labels=8, converged_stages=[True])
    held_out = OutputReference("label-9", (("a", "dataset"),))
    out = step(maker, [structure], hist_state, test_set=held_out, report=_report(True, 0, n_labelled=3, n_requested=4))
    assert isinstance(out, FinetuneOutput)
    assert out.converged and out.converged_stages == [True, True]
    assert out.n_dft_labels == 11 and out.n_iterations == 4
    assert out.iterations[-1].n_label_failures == 1
    # the model and the held-out set stay where their jobs stored them: the output points there
    assert out.model_job == "train-2" and out.model.uuid == "train-2"
    assert out.test_set.uuid == "label-9" and out.last_test.energy_rmse == 0.002


def test_out_of_iterations_fails_or_continues(maker, structure, tmp_path):
    state = LoopState(stage=0, iteration=1, stage_iteration=1, train_sets=[INIT], model=_model_ref("train-1"),
                      n_sets_trained=1)
    maker.on_not_converged = "fail"
    with pytest.raises(RuntimeError, match="did not converge in 2 iterations"):
        step(maker, [structure], state, test_set=Dataset(), report=_report(False, 2))
    maker.on_not_converged = "continue"
    resp = step(maker, [structure], state, test_set=Dataset(), report=_report(False, 2))
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
