"""State and output documents of the iterative fine-tune loop."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset, ModelFile


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


class LoopState(BaseModel):
    """Iteration state carried from one loop job to the next (small: data stays in the store).

    Training sets are kept as (job uuid, output attribute) pairs; the loop job turns them back
    into OutputReferences so every job resolves its data from the JobStore.
    """

    stage: int = 0
    iteration: int = 0
    stage_iteration: int = 0
    train_refs: list[tuple[str, list[list[str]]]] = Field(
        default_factory=list, description="(job uuid, OutputReference attributes) of each training dataset"
    )
    n_sets_trained: int = Field(0, description="number of train_refs the current model was trained on")
    model_job: str | None = Field(None, description="uuid of the training job of the current model")
    model_trained_this_iteration: bool = False
    n_dft_labels: int = 0
    n_reused_labels: int = 0
    history: list[IterationRecord] = Field(default_factory=list)
    converged_stages: list[bool] = Field(default_factory=list)


class FinetuneOutput(BaseModel):
    """Result of the fine-tune loop (``model`` and ``test_set`` live in the ``data`` store)."""

    model: ModelFile | None = Field(None, description="final fine-tuned model (teacher)")
    model_job: str | None = Field(None, description="uuid of the training job of the final model")
    test_set: Dataset | None = Field(None, description="last iteration set D_i, never trained on: held-out DFT frames")
    converged: bool = Field(description="every stage converged")
    converged_stages: list[bool] = Field(default_factory=list)
    n_iterations: int
    n_dft_labels: int = Field(description="labels inside the loop (initial labels not counted; reused included)")
    n_reused_labels: int = Field(0, description="of those, labels reused from the store (not paid again)")
    n_train_frames: int = Field(description="frames the final model was trained on")
    iterations: list[IterationRecord] = Field(default_factory=list)
