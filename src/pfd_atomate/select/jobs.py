"""Selection job: pre-label filters, then random or QUESTS entropy selection (PFD step 4)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobflow import Maker, job

from pfd_atomate.checks import check_choice, check_int, check_number
from pfd_atomate.data import Dataset, Frame, as_dataset
from pfd_atomate.explore.frames import candidate_frames
from pfd_atomate.select.entropy import dataset_entropy, entropy_select
from pfd_atomate.select.filters import FrameFilter
from pfd_atomate.select.sampling import random_select, share_quota
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
    per_structure: with candidates from several input structures, share ``n_select`` evenly among them
        (:func:`~pfd_atomate.select.sampling.share_quota`) and select each share among that structure's
        frames. Without it, entropy selection follows novelty alone: in a diamond + β-Sn + BC8 run it took
        15 of 16 labels from β-Sn, so the convergence test never saw the other phases
        (``benchmarks/README.md``, multi-phase run).
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
    per_structure: bool = True

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
        if not isinstance(self.per_structure, bool):  # check_choice would take 1 and 0 for True and False
            raise ValueError(f"SelectMaker.per_structure must be true or false, got {self.per_structure!r}")
        if isinstance(self.frame_filter, dict):
            self.frame_filter = FrameFilter.model_validate(self.frame_filter)

    @job(output_schema=SelectOutput, data=["dataset"])
    def make(self, candidates: Sequence[Any], reference: Sequence[Dataset | None] = (),
             structure_indices: Sequence[int] | None = None) -> SelectOutput:
        """Select frames from the union of ``candidates``.

        Parameters
        ----------
        candidates: candidate frames: atomate2 MD task documents (``ForceFieldTaskDocument``, read by
            :func:`~pfd_atomate.explore.frames.md_frames`) or datasets; ``None`` entries are skipped.
        reference: data the selection should be novel against (all training data so far).
        structure_indices: the input structure each candidate comes from (same length as ``candidates``;
            the explore jobs' ``structure_index`` metadata); ``None``: all from one.

        Raises
        ------
        ValueError: no candidate frame is left after the filters (empty selection), or
            ``structure_indices`` of another length than ``candidates``.
        """
        if structure_indices is None or not self.per_structure:
            structure_indices = [0] * len(candidates)
        if len(structure_indices) != len(candidates):
            raise ValueError(f"structure_indices has {len(structure_indices)} entries for {len(candidates)} candidates")
        groups: dict[int, list[Dataset | None]] = {}
        for candidate, index in zip(candidates, structure_indices):
            groups.setdefault(int(index), []).append(candidate_frames(candidate))
        ref = Dataset.concat([as_dataset(r) for r in reference], name="reference")
        kept_groups, n_pool, rejected = [], 0, {}
        for index in sorted(groups):
            pool = Dataset.concat(groups[index], name="candidates")
            kept, rejected_here = self.frame_filter.apply(pool)
            kept_groups.append(kept)
            n_pool += len(pool)
            rejected = {r: rejected.get(r, 0) + n for r, n in rejected_here.items()}
        n_kept = sum(len(k) for k in kept_groups)
        logger.info("selection: %d candidates, %d after filters %s", n_pool, n_kept, rejected)
        if n_kept == 0:
            raise ValueError(
                f"empty selection: all {n_pool} candidate frames were rejected by the pre-label filters {rejected}"
            )
        quota = share_quota(min(self.n_select, n_kept), [len(k) for k in kept_groups])
        picked: list[Frame] = []
        dh: list[float | None] | None = [] if self.method == "entropy" else None
        ref_entropy = sel_entropy = None
        for g, (kept, n) in enumerate(zip(kept_groups, quota)):
            if n == 0:
                continue
            if self.method == "entropy":
                result = entropy_select(kept, n, chunk_size=self.chunk_size, reference=ref if len(ref) else None,
                                        h=self.bandwidth, k=self.descriptor_k, cutoff=self.descriptor_cutoff)
                indices = list(result.indices)
                dh.extend(result.dh)
                ref_entropy, sel_entropy = result.reference_entropy, result.selected_entropy
            else:
                indices = random_select(len(kept), n, seed=None if self.seed is None else self.seed + g)
            picked.extend(kept[i].without_labels() for i in indices)
        selected = Dataset(frames=picked, name="selected")
        if self.method == "entropy" and sum(q > 0 for q in quota) > 1:  # the entropy of all picks together
            sel_entropy = dataset_entropy(selected, h=self.bandwidth, k=self.descriptor_k, cutoff=self.descriptor_cutoff)
        return SelectOutput(
            dataset=selected,
            method=self.method,
            n_candidates=n_pool,
            n_after_filter=n_kept,
            rejected=rejected,
            n_selected=len(selected),
            n_selected_per_structure=quota if len(quota) > 1 else None,
            dh=dh,
            reference_entropy=ref_entropy,
            selected_entropy=sel_entropy,
        )
