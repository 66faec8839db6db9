"""State, per-iteration report and output documents of the iterative fine-tune loop."""

from __future__ import annotations

from jobflow import OutputReference
from pydantic import BaseModel, ConfigDict, Field

from pfd_atomate.data import Dataset, DatasetSelection, ModelFile
from pfd_atomate.evaluate.schemas import TestMetrics


class IterationRecord(BaseModel):
    """What one fine-tune iteration did and measured (queryable in the JobStore)."""

    stage: int = Field(description="exploration stage index")
    iteration: int = Field(description="global iteration index (0-based)")
    stage_iteration: int = Field(description="iteration index within the stage (0-based)")
    model_sha256: str = Field(description="model M_i tested in this iteration")
    trained: bool = Field(description="whether M_i was trained in this iteration (False: carried over)")
    n_train_frames: int = Field(description="frames M_i was trained on")
    n_candidates: int | None = None
    n_selected: int | None = None
    n_selected_per_structure: list[int] | None = Field(
        None, description="frames of D_i per input structure, in input order (None: one structure)")
    n_labelled: int = Field(0, description="DFT labels of this iteration's set D_i (reused ones included)")
    n_reused: int = Field(0, description="labels of D_i found in the store (not paid again)")
    n_label_failures: int = 0
    energy_rmse: float | None = Field(None, description="M_i on D_i, eV/atom")
    force_rmse: float | None = Field(None, description="M_i on D_i, eV/Å")
    accurate_ratio: float | None = Field(None, description="fraction of D_i inside the per-frame thresholds")
    converged: bool = False
    reason: str = ""
    n_added: int = Field(0, description="frames of D_i added to the training set (trust window)")
    train_job: str | None = Field(None, description="uuid of the training job of M_i")
    label_job: str | None = Field(None, description="uuid of the labelling job of D_i")
    evaluate_job: str | None = Field(None, description="uuid of the test job of M_i on D_i")


class IterationReport(BaseModel):
    """The finished iteration's numbers, as the loop's decision job reads them from the job outputs."""

    model_sha256: str
    n_train_frames: int
    n_candidates: int | None = None
    n_selected: int | None = None
    n_selected_per_structure: list[int] | None = None
    n_labelled: int
    n_requested: int
    n_reused: int = 0
    metrics: TestMetrics
    converged: bool
    reason: str = ""
    n_added: int = 0
    label_job: str | None = None
    evaluate_job: str | None = None


class LoopState(BaseModel):
    """Iteration state carried from one loop job to the next (small: data stays in the store).

    The training sets and the current model are jobflow ``OutputReference`` s to the outputs
    of the jobs that made them; the loop job does not resolve them (every later job does).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stage: int = 0
    iteration: int = 0
    stage_iteration: int = 0
    train_sets: list[OutputReference | DatasetSelection] = Field(
        default_factory=list, description="references to the training datasets (or to parts of them)")
    n_sets_trained: int = Field(0, description="number of train_sets the current model was trained on")
    model: OutputReference | None = Field(None, description="reference to the current model (a training job's output)")
    model_trained_this_iteration: bool = False
    n_dft_labels: int = 0
    n_reused_labels: int = 0
    history: list[IterationRecord] = Field(default_factory=list)
    converged_stages: list[bool] = Field(default_factory=list)


class FinetuneOutput(BaseModel):
    """Result of the fine-tune loop.

    ``model`` and ``test_set`` are stored as references to the training and labelling jobs that
    made them (each object is stored once); ``JobStore.get_output`` resolves them.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: ModelFile | OutputReference | None = Field(None, description="final fine-tuned model (teacher)")
    model_job: str | None = Field(None, description="uuid of the training job of the final model")
    test_set: Dataset | OutputReference | None = Field(
        None, description="last iteration set D_i, never trained on: held-out DFT frames")
    converged: bool = Field(description="every stage converged")
    converged_stages: list[bool] = Field(default_factory=list)
    n_iterations: int
    n_dft_labels: int = Field(description="labels inside the loop (initial labels not counted; reused included)")
    n_reused_labels: int = Field(0, description="of those, labels reused from the store (not paid again)")
    n_train_frames: int = Field(description="frames the final model was trained on")
    last_test: TestMetrics | None = Field(None, description="the final model on test_set, which it never trained on")
    iterations: list[IterationRecord] = Field(default_factory=list)
