"""Selection job: pre-label filters, then random or QUESTS entropy selection (PFD step 4)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobflow import Maker, job

from pfd_atomate.checks import check_choice, check_int, check_number
from pfd_atomate.data import Dataset, as_dataset
from pfd_atomate.explore.frames import candidate_frames
from pfd_atomate.select.entropy import entropy_select
from pfd_atomate.select.filters import FrameFilter
from pfd_atomate.select.sampling import random_select
from pfd_atomate.select.schemas import SelectOutput

logger = logging.getLogger(__name__)


@dataclass
class SelectMaker(Maker):
    """Filter candidate frames and choose ``n_select`` of them for labelling.

    Parameters
    ----------
    name: job name.
    n_select: frames to label per iteration.
    method: "entropy" (PFD SI, Algorithm 1, with QUESTS) or "random".
    chunk_size: frames added per round of entropy selection.
    bandwidth: QUESTS kernel bandwidth h, Å (PFD default 0.015).
    descriptor_k, descriptor_cutoff: QUESTS descriptor neighbours and cutoff (Å).
    frame_filter: pre-label filters (min distance, box skewness, box length).
    seed: seed of random selection.
    """

    name: str = "pfd select"
    n_select: int = 10
    method: Literal["entropy", "random"] = "entropy"
    chunk_size: int = 1
    bandwidth: float = 0.015
    descriptor_k: int = 32
    descriptor_cutoff: float = 5.0
    frame_filter: FrameFilter = field(default_factory=FrameFilter)
    seed: int | None = None

    def __post_init__(self) -> None:
        """Check every setting before any job exists (``ValueError`` naming the field)."""
        check_int("SelectMaker", "n_select", self.n_select, 1)
        check_choice("SelectMaker", "method", self.method, ("entropy", "random"))
        check_int("SelectMaker", "chunk_size", self.chunk_size, 1)
        check_number("SelectMaker", "bandwidth", self.bandwidth, 0.0, low_open=True)
        check_int("SelectMaker", "descriptor_k", self.descriptor_k, 1)
        check_number("SelectMaker", "descriptor_cutoff", self.descriptor_cutoff, 0.0, low_open=True)
        if self.seed is not None:
            check_int("SelectMaker", "seed", self.seed, 0)
        if isinstance(self.frame_filter, dict):
            self.frame_filter = FrameFilter.model_validate(self.frame_filter)

    @job(output_schema=SelectOutput, data=["dataset"])
    def make(self, candidates: Sequence[Any], reference: Sequence[Dataset | None] = ()) -> SelectOutput:
        """Select frames from the union of ``candidates``.

        Parameters
        ----------
        candidates: candidate frames: atomate2 MD task documents (``ForceFieldTaskDocument``, read by
            :func:`~pfd_atomate.explore.frames.md_frames`) or datasets; ``None`` entries are skipped.
        reference: data the selection should be novel against (all training data so far).

        Raises
        ------
        ValueError: no candidate frame is left after the filters (empty selection).
        """
        pool = Dataset.concat([candidate_frames(c) for c in candidates], name="candidates")
        ref = Dataset.concat([as_dataset(r) for r in reference], name="reference")
        kept, rejected = self.frame_filter.apply(pool)
        logger.info("selection: %d candidates, %d after filters %s", len(pool), len(kept), rejected)
        if len(kept) == 0:
            raise ValueError(
                f"empty selection: all {len(pool)} candidate frames were rejected by the pre-label filters {rejected}"
            )
        n = min(self.n_select, len(kept))
        dh = ref_entropy = sel_entropy = None
        if self.method == "entropy":
            result = entropy_select(
                kept,
                n,
                chunk_size=self.chunk_size,
                reference=ref if len(ref) else None,
                h=self.bandwidth,
                k=self.descriptor_k,
                cutoff=self.descriptor_cutoff,
            )
            indices = list(result.indices)
            dh = list(result.dh)
            ref_entropy, sel_entropy = result.reference_entropy, result.selected_entropy
        elif self.method == "random":
            indices = random_select(len(kept), n, seed=self.seed)
        else:
            raise ValueError(f"unknown selection method {self.method!r}")
        selected = Dataset(frames=[kept[i].without_labels() for i in indices], name="selected")
        return SelectOutput(
            dataset=selected,
            method=self.method,
            n_candidates=len(pool),
            n_after_filter=len(kept),
            rejected=rejected,
            n_selected=len(selected),
            dh=dh,
            reference_entropy=ref_entropy,
            selected_entropy=sel_entropy,
        )
