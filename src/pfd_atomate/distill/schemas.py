"""Output documents of the distillation step."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.evaluate.schemas import TestMetrics


class TeacherSplit(BaseModel):
    """Positions, in the teacher-labelled dataset, of the student's training and held-out frames."""

    train_indices: list[int]
    test_indices: list[int]


class DistillOutput(BaseModel):
    """Result of distillation; the student itself stays in its training job's output (stored once)."""

    model_job: str = Field(description="uuid of the student's training job (its output.model is the student)")
    model_sha256: str = Field(description="SHA-256 of the student model file")
    teacher_sha256: str
    n_train_frames: int
    n_teacher_test_frames: int
    teacher_test: TestMetrics | None = Field(None, description="student vs teacher on held-out teacher frames")
    dft_test: TestMetrics | None = Field(None, description="student vs DFT on held-out DFT frames")
    compression_check: TestMetrics | None = Field(
        None, description="compressed student vs the same student uncompressed, on the held-out teacher frames")
