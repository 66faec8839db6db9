"""The final document of a PFD run: provenance a user queries in MongoDB."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.evaluate.schemas import TestMetrics
from pfd_atomate.finetune.schemas import IterationRecord


class StoredObject(BaseModel):
    """Where an object lives in the JobStore: field ``field`` of the output of job ``job_uuid``
    (``fetch_field(store, job_uuid, field)``; the bytes are in the ``data`` store)."""

    job_uuid: str
    field: str
    sha256: str | None = None


class ModelLineage(BaseModel):
    """One model of the run and where it came from."""

    role: str = Field(description="'foundation', 'teacher' (fine-tuned) or 'student'")
    backend: str
    base_model: str | None = Field(None, description="registry name or path of a foundation model")
    sha256: str | None = None
    parent_sha256: str | None = None
    location: StoredObject | None = None


class PFDOutput(BaseModel):
    """Provenance of one PFD run (pre-train → fine-tune → distill)."""

    formula: str = Field(description="reduced formula(s) of the input structures, '-'-joined")
    n_structures: int
    n_initial_labels: int = Field(description="labels of the perturbed frames")
    n_loop_labels: int = Field(description="labels in the fine-tune loop")
    n_dft_labels: int = Field(description="all labels from the labeller (DFT) in the run's datasets")
    n_reused_labels: int = Field(0, description="of those, labels reused from the store (paid by an earlier run)")
    n_paid_labels: int = Field(0, description="labels computed by this run: n_dft_labels - n_reused_labels")
    n_label_failures: int
    labeller: str
    n_iterations: int
    converged: bool
    iterations: list[IterationRecord]
    teacher_test: TestMetrics | None = Field(
        None, description="teacher on the last iteration set, which it was never trained on (metrics)")
    student_teacher_test: TestMetrics | None = Field(None, description="student vs teacher on held-out teacher frames")
    student_dft_test: TestMetrics | None = Field(None, description="student on the held-out DFT frames")
    compression_check: TestMetrics | None = Field(None, description="compressed vs uncompressed student")
    n_distill_frames: int | None = None
    lineage: list[ModelLineage] = Field(default_factory=list)
    datasets: dict[str, StoredObject] = Field(default_factory=dict, description="where each dataset lives")
