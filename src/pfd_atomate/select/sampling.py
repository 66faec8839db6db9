"""Random selection of candidate frames (PFD-kit's original selection strategy, PFD SI Fig. S1)."""

from __future__ import annotations

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
