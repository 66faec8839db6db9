"""The iterative fine-tune loop (PFD steps 2-5) as a jobflow ``Response(replace=...)`` chain.

Each loop job looks at the previous iteration's test of M_i on D_i, decides (converged →
next stage or finish; not converged → add the trust-window part of D_i to the training
set), and replaces itself with the next iteration: train → explore → select → label →
test → loop job. The pattern follows atomate2's ``mpmorph`` loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from atomate2.forcefields.md import ForceFieldMDMaker
from jobflow import CURRENT_JOB, Flow, Job, JobConfig, Maker, OutputReference, Response, job
from jobflow.core.reference import find_and_resolve_references
from pymatgen.core import Structure

from pfd_atomate.checks import check_choice, check_int, check_number, check_supercell
from pfd_atomate.data import DatasetSelection
from pfd_atomate.data.staging import staged
from pfd_atomate.evaluate.jobs import EvaluateMaker
from pfd_atomate.evaluate.schemas import ConvergenceCriteria, TrustWindow
from pfd_atomate.explore.jobs import ExploreMaker, explore_task_jobs
from pfd_atomate.explore.schemas import Stage
from pfd_atomate.finetune.schemas import FinetuneOutput, IterationRecord, IterationReport, LoopState
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.presets import dpa4_teacher, exploration_stages
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.jobs import TrainMaker

logger = logging.getLogger(__name__)


@dataclass
class FinetuneMaker(Maker):
    """Iterative fine-tuning of a foundation model (PFD steps 2-5; PFD paper, Fig. 1b).

    Parameters
    ----------
    name: name of the loop jobs.
    trainer: backend that fine-tunes (the "P" model and its settings); default: DPA-4
        (:func:`pfd_atomate.presets.dpa4_teacher`).
    stages: exploration stages, run in sequence; each must converge (or run out of iterations);
        default: :func:`pfd_atomate.presets.exploration_stages`.
    md_maker: atomate2 ``ForceFieldMDMaker`` template for exploration.
    md_supercell: supercell of the input structures used for exploration.
    select: pre-label filters and frame selection.
    label: labeller (any atomate2 static Maker, wrapped).
    criteria: convergence criteria of M_i on D_i.
    trust_window: which frames of D_i are added to training.
    max_iterations: iterations per stage.
    on_not_converged: "fail" raises when a stage runs out of iterations; "continue" goes on.
    init_from: "base" fine-tunes the foundation model each iteration; "previous" restarts from M_{i-1}.
    new_data_weight: relative sampling weight of the newest dataset (None: all frames equal).
    seed: base seed for MD initial velocities.
    """

    name: str = "pfd fine-tune"
    trainer: TrainerBackend = field(default_factory=dpa4_teacher)
    stages: list[Stage] = field(default_factory=exploration_stages)
    md_maker: ForceFieldMDMaker = field(
        default_factory=lambda: ForceFieldMDMaker(force_field_name="DeepMD", store_trajectory="partial")
    )
    md_supercell: tuple[int, int, int] | None = None
    select: SelectMaker = field(default_factory=SelectMaker)
    label: LabelMaker = field(default_factory=LabelMaker)
    criteria: ConvergenceCriteria = field(default_factory=ConvergenceCriteria)
    trust_window: TrustWindow = field(default_factory=TrustWindow)
    max_iterations: int = 4
    on_not_converged: Literal["fail", "continue"] = "continue"
    init_from: Literal["base", "previous"] = "base"
    new_data_weight: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every setting before any job exists (``ValueError`` naming the field)."""
        check_int("FinetuneMaker", "max_iterations", self.max_iterations, 1)
        check_choice("FinetuneMaker", "on_not_converged", self.on_not_converged, ("fail", "continue"))
        check_choice("FinetuneMaker", "init_from", self.init_from, ("base", "previous"))
        if self.new_data_weight is not None:
            check_number("FinetuneMaker", "new_data_weight", self.new_data_weight, 0.0, low_open=True)
        check_supercell("FinetuneMaker", "md_supercell", self.md_supercell)
        check_int("FinetuneMaker", "seed", self.seed, 0)
        self.stages = [Stage.model_validate(s) if isinstance(s, dict) else s for s in self.stages]

    def make(self, structures: Structure | Sequence[Structure], init_datasets: Sequence[Any]) -> Flow:
        """Build the loop's first job.

        Parameters
        ----------
        structures: starting structure(s) of the exploration MD.
        init_datasets: labelled datasets to fine-tune on first (OutputReferences to stored
            datasets, e.g. ``label_job.output.dataset``, or Dataset values).

        Raises
        ------
        ValueError: no stage, no trainer, or no initial data.
        """
        if self.trainer is None:
            raise ValueError("FinetuneMaker needs a trainer backend")
        if not self.stages:
            raise ValueError("FinetuneMaker needs at least one exploration stage")
        if not init_datasets:
            raise ValueError("FinetuneMaker needs initial labelled data")
        structures = [structures] if isinstance(structures, Structure) else list(structures)
        jobs: list[Job] = []
        train_sets: list[OutputReference] = []
        for d in init_datasets:
            stage, d = staged(d, "pfd initial dataset")  # every iteration's training references it
            jobs += stage
            train_sets.append(d)
        # the references in the state make the first loop job wait for the initial datasets
        loop = finetune_step(self, structures, LoopState(train_sets=train_sets))
        loop.name = f"{self.name} s0 i0"
        loop.update_metadata({"pfd_step": "decide", "stage": 0, "iteration": 0}, dynamic=False)
        jobs.append(loop)
        return Flow(jobs, output=loop.output, name=self.name)


# no output_schema: jobflow stores a replaced job's output as a reference to the next loop
# job (resolved on read), which a schema check would reject; the final output is FinetuneOutput.
# resolve_references=False: the state's references to datasets and models stay references (the
# jobs of the next iteration resolve them); the job resolves the small iteration report itself.
@job(config=JobConfig(resolve_references=False, expose_store=True))
def finetune_step(
    maker: FinetuneMaker,
    structures: list[Structure],
    state: LoopState,
    test_set: Any = None,
    report: Any = None,
) -> Response | FinetuneOutput:
    """One decision of the fine-tune loop; replaces itself with the next iteration.

    Parameters
    ----------
    maker: the loop's settings.
    structures: starting structures of the exploration.
    state: iteration state (stage, counters, references to training sets and the current model,
        history).
    test_set: reference to D_i of the iteration just finished, or None at the start.
    report: the finished iteration's numbers (an :class:`IterationReport` of references to the
        selection, label, training and test outputs), or None at the start.

    Raises
    ------
    RuntimeError: a stage did not converge within ``max_iterations`` and
        ``on_not_converged == "fail"`` (everything computed so far stays in the store).
    """
    state = state.model_copy(deep=True)
    n_stages = len(maker.stages)
    if report is not None:
        # the small iteration report is the one input this job resolves from the JobStore
        report = IterationReport.model_validate(find_and_resolve_references(report, CURRENT_JOB.store))
        record = IterationRecord(
            **report.model_dump(exclude={"metrics", "n_requested"}),  # the fields both documents share
            stage=state.stage,
            iteration=state.iteration,
            stage_iteration=state.stage_iteration,
            trained=state.model_trained_this_iteration,
            n_label_failures=report.n_requested - report.n_labelled,
            energy_rmse=report.metrics.energy_rmse,
            force_rmse=report.metrics.force_rmse,
            accurate_ratio=report.metrics.accurate_ratio,
            train_job=None if state.model is None else state.model.uuid,
        )
        state.history.append(record)
        state.n_dft_labels += record.n_labelled
        state.n_reused_labels += record.n_reused
        logger.info(
            "PFD stage %d iteration %d: energy RMSE %s eV/atom, force RMSE %s eV/Å, accurate %s -> %s",
            record.stage, record.iteration, record.energy_rmse, record.force_rmse, record.accurate_ratio,
            "converged" if record.converged else "not converged",
        )
        out_of_iterations = state.stage_iteration + 1 >= maker.max_iterations
        if not record.converged and record.n_added > 0:
            # the trust-window part of D_i, as indices into the stored set (no copy)
            state.train_sets.append(DatasetSelection(
                dataset=OutputReference(report.label_job, (("a", "dataset"),)),
                indices=OutputReference(report.evaluate_job, (("a", "added_indices"),)),
            ))
        if record.converged or out_of_iterations:
            if not record.converged and maker.on_not_converged == "fail":
                raise RuntimeError(
                    f"stage {state.stage} did not converge in {maker.max_iterations} iterations: "
                    f"last energy RMSE {record.energy_rmse} eV/atom, force RMSE {record.force_rmse} eV/Å "
                    f"({record.reason}); all iterations are kept in the JobStore"
                )
            state.converged_stages.append(record.converged)
            state.stage += 1
            state.stage_iteration = 0
        else:
            state.stage_iteration += 1
        state.iteration += 1

        if state.stage >= n_stages:
            return FinetuneOutput(
                model=state.model,
                model_job=state.model.uuid,
                test_set=test_set,
                converged=all(state.converged_stages),
                converged_stages=state.converged_stages,
                n_iterations=state.iteration,
                n_dft_labels=state.n_dft_labels,
                n_reused_labels=state.n_reused_labels,
                n_train_frames=record.n_train_frames,
                last_test=report.metrics,
                iterations=state.history,
            )

    return Response(replace=_next_iteration(maker, structures, state))


def _next_iteration(maker: FinetuneMaker, structures: list[Structure], state: LoopState) -> Flow:
    """Jobs of one iteration: (train) → explore × tasks → select → label → test → loop job.

    Every job carries jobflow metadata ``pfd_step`` (train, explore, select, label, test, decide),
    ``stage`` and ``iteration``; the labelling passes them on to the static jobs it creates.
    """
    tag = f"s{state.stage} i{state.iteration}"
    where = {"stage": state.stage, "iteration": state.iteration}
    jobs: list[Job | Flow] = []
    # retrain only when the training set grew since the current model was trained
    need_train = state.model is None or len(state.train_sets) > state.n_sets_trained
    if need_train:
        init = state.model if maker.init_from == "previous" else None
        n_sets, weight = len(state.train_sets), maker.new_data_weight
        weights = None if weight is None or n_sets < 2 else [1.0] * (n_sets - 1) + [weight]
        train = TrainMaker(name=f"pfd train {tag}", backend=maker.trainer).make(
            list(state.train_sets), init_model=init, weights=weights
        )
        train.update_metadata({"pfd_step": "train", **where}, dynamic=False)
        jobs.append(train)
        state.model = train.output.model
        state.n_sets_trained = len(state.train_sets)
    state.model_trained_this_iteration = need_train
    model = state.model

    explores = explore_task_jobs(
        ExploreMaker(backend=maker.trainer, md_maker=maker.md_maker),
        model,
        structures,
        maker.stages[state.stage].task_groups,
        name_prefix=f"pfd explore {tag}",
        seed=maker.seed + 1000 * state.iteration,
        supercell=maker.md_supercell,
    )
    for md in explores:
        md.update_metadata({"pfd_step": "explore", **where}, dynamic=False)
    jobs.extend(explores)

    select = maker.select.make([e.output for e in explores], reference=list(state.train_sets),
                               structure_indices=[e.metadata["structure_index"] for e in explores])
    select.name = f"pfd select {tag}"
    select.update_metadata({"pfd_step": "select", **where}, dynamic=False)
    label = maker.label.make(select.output.dataset)
    label.name = f"pfd label {tag}"
    label.update_metadata({"pfd_step": "label", **where}, dynamic=True)  # and the static jobs it makes
    test = EvaluateMaker(
        name=f"pfd test {tag}", backend=maker.trainer, criteria=maker.criteria, trust_window=maker.trust_window
    ).make(model, label.output.dataset)
    test.update_metadata({"pfd_step": "test", **where}, dynamic=False)
    jobs.extend([select, label, test])

    report = {
        "model_sha256": test.output.model_sha256,
        "n_train_frames": OutputReference(model.uuid, (("a", "n_frames"),)),
        "n_candidates": select.output.n_candidates,
        "n_selected": select.output.n_selected,
        "n_selected_per_structure": select.output.n_selected_per_structure,
        "n_labelled": label.output.n_labelled,
        "n_requested": label.output.n_requested,
        "n_reused": label.output.n_reused,
        "metrics": test.output.metrics,
        "converged": test.output.converged,
        "reason": test.output.reason,
        "n_added": test.output.n_added,
        "label_job": label.uuid,
        "evaluate_job": test.uuid,
    }
    next_step = finetune_step(maker, structures, state, test_set=label.output.dataset, report=report)
    next_step.name = f"{maker.name} {tag} decide"
    next_step.update_metadata({"pfd_step": "decide", **where}, dynamic=False)
    jobs.append(next_step)
    return Flow(jobs, output=next_step.output, name=f"{maker.name} {tag}")
