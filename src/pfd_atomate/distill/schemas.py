"""Output documents of the distillation step."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset, ModelFile


class TeacherLabelOutput(BaseModel):
    """Frames labelled by the teacher, split into student training and held-out sets."""

    train_set: Dataset
    test_set: Dataset
    n_candidates: int
    n_after_filter: int
    rejected: dict[str, int] = Field(default_factory=dict)
    teacher_sha256: str
    wall_time_s: float


class DistillOutput(BaseModel):
    """Result of distillation (``model`` lives in the ``data`` store)."""

    model: ModelFile = Field(description="the student model")
    model_job: str = Field(description="uuid of the student's training job")
    teacher_sha256: str
    n_train_frames: int
    n_teacher_test_frames: int
    teacher_test: dict | None = Field(None, description="student vs teacher on held-out teacher frames (metrics)")
    dft_test: dict | None = Field(None, description="student vs DFT on held-out DFT frames (metrics)")
