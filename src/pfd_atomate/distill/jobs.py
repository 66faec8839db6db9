"""Distillation jobs: the teacher-labelled frames split into training and held-out sets; results gathered."""

from __future__ import annotations

import logging

from jobflow import job

from pfd_atomate.distill.schemas import DistillOutput, TeacherSplit
from pfd_atomate.evaluate.schemas import TestMetrics

logger = logging.getLogger(__name__)


@job(output_schema=TeacherSplit)
def split_teacher_frames(n_frames: int, test_fraction: float) -> TeacherSplit:
    """Hold out the first ``round(test_fraction * n_frames)`` teacher-labelled frames (at least one
    held out, one trained on); the frames were picked in random order, so the split is random.

    Parameters
    ----------
    n_frames: teacher-labelled frames (``LabelOutput.n_labelled``).
    test_fraction: share held out, in (0, 1).

    Raises
    ------
    ValueError: fewer than 2 frames.
    """
    if n_frames < 2:
        raise ValueError(f"need at least 2 teacher frames to hold one out, got {n_frames}")
    n_test = min(max(1, int(round(test_fraction * n_frames))), n_frames - 1)
    logger.info("teacher frames: %d to train the student, %d held out", n_frames - n_test, n_test)
    return TeacherSplit(train_indices=list(range(n_test, n_frames)), test_indices=list(range(n_test)))


@job(output_schema=DistillOutput)
def gather_distill(
    model_job: str,
    model_sha256: str,
    teacher_sha256: str,
    n_train_frames: int,
    teacher_test: TestMetrics,
    dft_test: TestMetrics | None = None,
    compression_check: TestMetrics | None = None,
) -> DistillOutput:
    """Collect where the student is and how it tested into one document."""
    return DistillOutput(
        model_job=model_job,
        model_sha256=model_sha256,
        teacher_sha256=teacher_sha256,
        n_train_frames=n_train_frames,
        n_teacher_test_frames=teacher_test.n_frames,
        teacher_test=teacher_test,
        dft_test=dft_test,
        compression_check=compression_check,
    )
