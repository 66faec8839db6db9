"""Frame selection by QUESTS differential entropy (PFD SI, Algorithm 1).

QUESTS (Schwalbe-Koda et al., Nat. Commun. 2025) describes each atomic environment by a
vector ``X_i`` of sorted, smoothly cut-off inverse distances (``k`` neighbours within
``cutoff`` Å; species are not part of the descriptor) and measures a set's diversity by the
kernel-density entropy ``H = -1/n sum_i log(1/n sum_j K_h(X_i, X_j))`` with a Gaussian kernel of
bandwidth ``h``. The differential entropy of an environment ``Y`` against a set ``{X}`` is
``dH(Y | X) = -log sum_i K_h(Y, X_i)``: large when ``Y`` is unlike everything in ``{X}``.
All entropies here are in nats.

PFD SI Algorithm 1 grows the selected set greedily: starting from the data already
available ``D``, compute ``dH(f | D)`` for every remaining candidate frame ``f``, add the
``chunk_size`` frames with the largest ``dH`` to ``D``, repeat until ``N`` frames are picked.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel

from pfd_atomate.data import Dataset

_F = TypeVar("_F", bound=Callable)


@contextlib.contextmanager
def openmp_thread_budget() -> Iterator[int | None]:
    """Run numba code (quests) within the process's OpenMP thread budget, and leave that budget as it was.

    numba's "omp" threading layer gives the OpenMP runtime its own thread count (``NUMBA_NUM_THREADS``, every
    core by default) on each parallel call and leaves it there. torch shares that libgomp, so every model
    evaluated later in the same process (exploration MD after a selection, in a FireWorks rapidfire worker or
    ``run_locally``) ran with every core's threads: a DPA-4 call on Si8 went from 0.14 to 2.7 s on a busy
    2-core machine with ``OMP_NUM_THREADS=1``. The budget is the smallest thread count of the OpenMP runtimes
    loaded now (threadpoolctl), else ``OMP_NUM_THREADS``; numba runs within it and every OpenMP runtime
    loaded afterwards is set back to it. Yields the budget (``None``: nothing to keep).
    """
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
    env = os.environ.get("OMP_NUM_THREADS", "")
    budget = min(counts) if counts else (int(env) if env.isdigit() and int(env) > 0 else None)
    previous = numba.get_num_threads()
    if budget is not None:
        numba.set_num_threads(min(previous, budget))
    try:
        yield budget
    finally:
        numba.set_num_threads(previous)
        if budget is not None:
            threadpool_limits(limits=budget, user_api="openmp")  # called, not entered: the setting stays


def _within_thread_budget(func: _F) -> _F:
    """Decorate a function that calls quests to run inside :func:`openmp_thread_budget`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with openmp_thread_budget():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

#: dH of an environment is capped here (nats): -log of the smallest normal float64. An
#: environment with no reference environment within ~0.58 (in descriptor units, for h=0.015)
#: has a kernel sum that underflows to 0, i.e. dH = inf; with the cap, frames compare by how
#: many of their environments are unseen instead of all tying at infinity.
DH_CAP = float(-np.log(np.finfo(np.float64).tiny))

Reduce = Literal["mean", "max"]


class EntropySelection(BaseModel):
    """Result of :func:`entropy_select`.

    Attributes
    ----------
    indices: picked candidate indices, in selection order.
    dh: frame dH (nats, reduced over the frame's atoms with ``reduce``) of each
        pick against ``D`` at the time it was picked (so non-increasing within a chunk);
        ``None`` for a bootstrap pick made while ``D`` was empty (dH against nothing is
        infinite), see :func:`entropy_select`.
    reference_entropy: QUESTS entropy of the reference environments (nats), ``None`` without
        reference data.
    selected_entropy: entropy of the selected frames' environments alone (nats).
    total_entropy: entropy of reference plus selected environments (nats).
    n_candidates, chunk_size, reduce, h, k, cutoff: the settings used.
    """

    indices: list[int]
    dh: list[float | None]
    reference_entropy: float | None
    selected_entropy: float
    total_entropy: float
    n_candidates: int
    chunk_size: int
    reduce: str
    h: float
    k: int
    cutoff: float


@_within_thread_budget
def frame_descriptors(dataset: Dataset, k: int = 32, cutoff: float = 5.0) -> list[np.ndarray]:
    """QUESTS descriptors of every frame, computed in one ``get_descriptors`` call.

    Returns
    -------
    One array per frame, shape (n_atoms, 2k - 1).
    """
    from quests.descriptor import get_descriptors

    if len(dataset) == 0:
        return []
    x = get_descriptors(dataset.to_atoms_list(with_labels=False), k=k, cutoff=cutoff)
    bounds = np.cumsum([f.n_atoms for f in dataset.frames])[:-1]
    return [np.ascontiguousarray(a) for a in np.split(x, bounds)]


@_within_thread_budget
def dataset_entropy(dataset: Dataset, h: float = 0.015, k: int = 32, cutoff: float = 5.0) -> float:
    """QUESTS entropy of all atomic environments of a dataset (nats).

    Parameters
    ----------
    dataset: frames (labels ignored); periodic or not.
    h: Gaussian kernel bandwidth (descriptor units, QUESTS/PFD default 0.015).
    k: neighbours per environment in the descriptor.
    cutoff: descriptor cutoff radius, Å.

    Raises
    ------
    ValueError: empty dataset or non-positive ``h``/``k``/``cutoff``.
    """
    from quests.entropy import entropy

    _check_settings(h, k, cutoff)
    if len(dataset) == 0:
        raise ValueError("dataset_entropy: the dataset is empty")
    return float(entropy(np.vstack(frame_descriptors(dataset, k=k, cutoff=cutoff)), h=h))


@_within_thread_budget
def entropy_select(
    candidates: Dataset,
    n_select: int,
    chunk_size: int = 1,
    reference: Dataset | None = None,
    h: float = 0.015,
    k: int = 32,
    cutoff: float = 5.0,
    reduce: Reduce = "mean",
) -> EntropySelection:
    """Pick the candidate frames that add the most new atomic environments (PFD SI, Algorithm 1).

    ``D`` starts as the reference environments. Each pass computes, for every remaining
    candidate frame ``f``, the per-atom ``dH(x | D)`` of its environments, reduces it over the
    frame's atoms (``"mean"``: the frame's average novelty; ``"max"``: its most novel atom), and
    adds the ``chunk_size`` frames with the largest value to ``D`` (ties: lower index first);
    the last pass takes only what is left to reach ``n_select``. Within a chunk, frames are
    ranked against ``D`` of that pass, so a larger ``chunk_size`` is faster but can pick frames
    that are similar to each other.

    Empty ``D`` (no reference): every dH would be infinite, so the first pass picks one frame
    alone, the candidate whose own environments have the largest QUESTS entropy (the most
    internally diverse frame), and chunks of ``chunk_size`` follow.

    Per-atom dH are capped at :data:`DH_CAP` (~708 nats) where the kernel sum underflows.
    Candidate descriptors are computed once; kernel sums against ``D`` are accumulated
    chunk by chunk (``dH(x | D ∪ S) = -log(sum_D K + sum_S K)``), which equals quests'
    ``delta_entropy`` against the grown set.

    Parameters
    ----------
    candidates: candidate frames (labels ignored), length n_candidates.
    n_select: frames to pick, ``1 <= n_select <= n_candidates``.
    chunk_size: frames added per pass (>= 1).
    reference: data already in the training set (may be ``None`` or empty).
    h: Gaussian kernel bandwidth (descriptor units; PFD default 0.015).
    k: neighbours per environment in the QUESTS descriptor.
    cutoff: QUESTS descriptor cutoff, Å.
    reduce: ``"mean"`` or ``"max"`` over a frame's atoms.

    Returns
    -------
    EntropySelection with the picked indices in order, their dH and the set entropies.

    Raises
    ------
    ValueError: empty candidates, ``n_select`` outside ``[1, n_candidates]``, ``chunk_size < 1``,
        unknown ``reduce``, non-positive ``h``/``k``/``cutoff``.

    Notes
    -----
    quests compiles its kernels with numba on first use (~25 s, cached on disk afterwards).
    """
    from quests.entropy import entropy, kernel_sum

    n_candidates = len(candidates)
    if n_candidates == 0:
        raise ValueError("entropy_select: there are no candidate frames")
    if not 1 <= n_select <= n_candidates:
        raise ValueError(f"entropy_select: n_select must be in [1, {n_candidates}], got {n_select}")
    if chunk_size < 1:
        raise ValueError(f"entropy_select: chunk_size must be >= 1, got {chunk_size}")
    if reduce not in ("mean", "max"):
        raise ValueError(f"entropy_select: reduce must be 'mean' or 'max', got {reduce!r}")
    _check_settings(h, k, cutoff)

    cand_x = frame_descriptors(candidates, k=k, cutoff=cutoff)
    ref_x = frame_descriptors(reference, k=k, cutoff=cutoff) if reference is not None else []
    all_y = np.vstack(cand_x)
    bounds = np.concatenate([[0], np.cumsum([len(x) for x in cand_x])])
    ref_all = np.vstack(ref_x) if ref_x else None

    # kernel sum of every candidate environment over D, shape (total candidate atoms,)
    p = np.zeros(len(all_y)) if ref_all is None else kernel_sum(all_y, ref_all, h=h)

    def frame_dh() -> np.ndarray:
        dh = -np.log(np.maximum(p, np.finfo(np.float64).tiny))
        op = np.mean if reduce == "mean" else np.max
        return np.array([op(dh[bounds[i] : bounds[i + 1]]) for i in range(n_candidates)])

    selected: list[int] = []
    picked_dh: list[float | None] = []
    remaining = np.ones(n_candidates, dtype=bool)

    def add(chunk: Sequence[int]) -> None:
        nonlocal p
        remaining[list(chunk)] = False
        selected.extend(int(i) for i in chunk)
        p = p + kernel_sum(all_y, np.vstack([cand_x[i] for i in chunk]), h=h)

    if ref_all is None:
        own = np.array([entropy(x, h=h) for x in cand_x])
        picked_dh.append(None)
        add([int(np.argmax(own))])

    while len(selected) < n_select:
        dh = frame_dh()
        order = [i for i in np.argsort(-dh, kind="stable") if remaining[i]]
        chunk = order[: min(chunk_size, n_select - len(selected))]
        picked_dh.extend(float(dh[i]) for i in chunk)
        add(chunk)

    sel_x = np.vstack([cand_x[i] for i in selected])
    return EntropySelection(
        indices=selected,
        dh=picked_dh,
        reference_entropy=None if ref_all is None else float(entropy(ref_all, h=h)),
        selected_entropy=float(entropy(sel_x, h=h)),
        total_entropy=float(entropy(sel_x if ref_all is None else np.vstack([ref_all, sel_x]), h=h)),
        n_candidates=n_candidates,
        chunk_size=chunk_size,
        reduce=reduce,
        h=h,
        k=k,
        cutoff=cutoff,
    )


def _check_settings(h: float, k: int, cutoff: float) -> None:
    if not h > 0:
        raise ValueError(f"QUESTS bandwidth h must be > 0, got {h}")
    if int(k) != k or k < 1:
        raise ValueError(f"QUESTS k must be an integer >= 1, got {k}")
    if not cutoff > 0:
        raise ValueError(f"QUESTS cutoff must be > 0 Å, got {cutoff}")
