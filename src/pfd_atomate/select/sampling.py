"""Random selection of candidate frames (PFD-kit's original selection strategy, PFD SI Fig. S1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def random_select(n_candidates: int, n_select: int, seed: int | None = None) -> list[int]:
    """Draw ``n_select`` distinct candidate indices uniformly at random, without replacement.

    Parameters
    ----------
    n_candidates: size of the candidate pool (>= 1).
    n_select: number of frames to pick, ``1 <= n_select <= n_candidates``.
    seed: seed of a private ``numpy.random.Generator`` (the global random state is not used);
        ``None`` gives a different draw each call.

    Returns
    -------
    Indices into the pool, in draw order (length ``n_select``).

    Raises
    ------
    ValueError: ``n_candidates < 1`` or ``n_select`` outside ``[1, n_candidates]``.
    """
    if n_candidates < 1:
        raise ValueError(f"random_select: the candidate pool is empty (n_candidates={n_candidates})")
    if not 1 <= n_select <= n_candidates:
        raise ValueError(f"random_select: n_select must be in [1, {n_candidates}], got {n_select}")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(n_candidates, size=n_select, replace=False)]


def share_quota(n_select: int, group_sizes: Sequence[int]) -> list[int]:
    """Split ``n_select`` picks as evenly as possible over groups of candidates (one group per input structure).

    Every group gets ``n_select // n_groups`` picks, the remainder goes one each to the first groups, and
    a group's picks never exceed its size: what a small group cannot take passes, one at a time, to the
    groups that still have candidates (in group order). This is DP-GEN's per-system candidate limit
    turned into a share of one budget, so that no input structure goes untested in an iteration.

    Parameters
    ----------
    n_select: total picks, ``0 <= n_select <= sum(group_sizes)``.
    group_sizes: candidates per group (>= 0 each).

    Returns
    -------
    Picks per group, same length as ``group_sizes``, summing to ``n_select``.

    Raises
    ------
    ValueError: a negative size, or ``n_select`` outside ``[0, sum(group_sizes)]``.
    """
    sizes = [int(s) for s in group_sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"share_quota: group sizes must be >= 0, got {sizes}")
    if not 0 <= n_select <= sum(sizes):
        raise ValueError(f"share_quota: n_select must be in [0, {sum(sizes)}], got {n_select}")
    quota = [0] * len(sizes)
    left = n_select
    while left:  # round-robin over the groups with candidates left: even shares, remainder to the first
        for g, size in enumerate(sizes):
            if left and quota[g] < size:
                quota[g] += 1
                left -= 1
    return quota
