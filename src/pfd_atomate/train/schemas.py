"""Output documents of training jobs."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import ModelFile


class TrainOutput(BaseModel):
    """Output of a training / fine-tuning job (``model`` lives in the ``data`` store)."""

    model: ModelFile = Field(description="the trained model file (compressed when the backend compresses)")
    uncompressed_model: ModelFile | None = Field(None, description="the model before compression, if compressed")
    backend: str = Field(description="trainer backend name")
    kind: str = Field(description="'finetuned' or 'scratch'")
    n_frames: int = Field(description="number of training frames")
    n_datasets: int = Field(description="number of datasets trained on")
    init_model_sha256: str | None = Field(None, description="model the training started from, if any")
    wall_time_s: float = Field(description="wall time of the training (and compression), s")
    resumed_from_step: int | None = Field(
        None, description="the step an interrupted training was continued from (its last checkpoint); None: from step 0"
    )
    training_dir: str | None = Field(None, description="folder the training ran in (input.json, lcurve.out, logs)")
    device: str = Field("cpu", description="where the training ran: 'cpu' or 'cuda'")
