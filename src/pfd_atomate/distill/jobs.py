"""Distillation jobs: the teacher labels its own MD frames; results are gathered."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from jobflow import job

from pfd_atomate.data import Dataset, ModelFile, as_model_file
from pfd_atomate.evaluate.schemas import TestMetrics
from pfd_atomate.explore.frames import candidate_frames
from pfd_atomate.distill.schemas import DistillOutput, TeacherLabelOutput
from pfd_atomate.select.filters import FrameFilter
from pfd_atomate.train.base import TrainerBackend

logger = logging.getLogger(__name__)


@job(output_schema=TeacherLabelOutput, data=["train_set", "test_set"])
def teacher_label(
    backend: TrainerBackend,
    model: ModelFile,
    candidates: Sequence[Any],
    frame_filter: FrameFilter | None = None,
    max_frames: int | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> TeacherLabelOutput:
    """Label MD frames with the teacher (cheap) and split off a held-out set.

    Parameters
    ----------
    backend: backend of the teacher model.
    model: the fine-tuned teacher.
    candidates: the teacher's MD task documents (``ForceFieldTaskDocument``) and further datasets.
    frame_filter: drop non-physical frames first.
    max_frames: keep at most this many frames (random subset).
    test_fraction: fraction held out to test the student against the teacher, in (0, 1).
    seed: seed of the subset and split.

    Raises
    ------
    ValueError: no frame left, or test_fraction outside [0, 1).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    model = as_model_file(model)
    pool = Dataset.concat([candidate_frames(c) for c in candidates], name="teacher candidates")
    kept, rejected = (frame_filter or FrameFilter()).apply(pool)
    if len(kept) == 0:
        raise ValueError(f"no teacher frame left: {len(pool)} candidates, rejected {rejected}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(kept))
    if max_frames is not None:
        order = order[:max_frames]
    start = time.perf_counter()
    labelled = backend.predict(model, kept.subset(order.tolist()))
    wall = time.perf_counter() - start
    n_test = min(max(1, int(round(test_fraction * len(labelled)))), len(labelled) - 1)
    if n_test < 1:
        raise ValueError(f"need at least 2 teacher frames to hold one out, got {len(labelled)}")
    logger.info("teacher labelled %d frames in %.1f s (%d held out)", len(labelled), wall, n_test)
    return TeacherLabelOutput(
        train_set=labelled.subset(range(n_test, len(labelled)), name="distill train"),
        test_set=labelled.subset(range(n_test), name="distill test"),
        n_candidates=len(pool),
        n_after_filter=len(kept),
        rejected=rejected,
        teacher_sha256=model.sha256,
        wall_time_s=wall,
        device=backend.compute_device,
    )


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
