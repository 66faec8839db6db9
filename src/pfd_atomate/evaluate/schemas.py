"""Test metrics, convergence criteria and trust window of the fine-tuning loop (PFD step 5).

PFD paper: "The fine-tuning task group would end if the average prediction error of the M_i
on the D_i dataset falls below the threshold or [...] (e.g., prediction error of 80 % frames
in D_i is below 1 meV/atom and 50 meV/Å)", and "labeled data of D_i are selectively added to
the training set for the next iteration".

A frame is *accurate* for thresholds ``(frame_energy, frame_force)`` when
``|energy error per atom| <= frame_energy`` and ``per-frame force RMSE <= frame_force``
(a threshold that is ``None`` is not checked). Thresholds are inclusive throughout.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


def accurate_mask(
    frame_energy_error: np.ndarray,
    frame_force_rmse: np.ndarray,
    frame_energy: float | None,
    frame_force: float | None,
) -> np.ndarray:
    """Boolean mask (n_frames,) of frames within the per-frame thresholds (eV/atom, eV/Å; inclusive).

    A ``None`` threshold is not checked (with both ``None`` every frame is within).
    """
    ok = np.ones(len(frame_energy_error), dtype=bool)
    if frame_energy is not None:
        ok &= np.abs(np.asarray(frame_energy_error)) <= frame_energy
    if frame_force is not None:
        ok &= np.asarray(frame_force_rmse) <= frame_force
    return ok


class TestMetrics(BaseModel):
    """Errors of a model on a labelled test set (the stored summary of ``evaluate.metrics.FrameErrors``).

    Attributes
    ----------
    n_frames: number of test frames.
    energy_rmse, energy_mae: over frames, of the energy per atom, eV/atom.
    force_rmse, force_mae: over all force components of all atoms, eV/Å.
    frame_energy_error: signed energy error per atom of each frame, eV/atom.
    frame_force_rmse: force RMSE of each frame, eV/Å.
    frame_force_max: largest atomic force-vector error of each frame, eV/Å.
    frame_energy_threshold, frame_force_threshold: per-frame thresholds used for
        ``accurate_ratio`` (eV/atom, eV/Å; ``None`` = not checked).
    accurate_ratio: fraction of frames within those thresholds.
    """

    __test__ = False  # not a pytest test class despite the name

    n_frames: int
    energy_rmse: float
    energy_mae: float
    force_rmse: float
    force_mae: float
    frame_energy_error: list[float]
    frame_force_rmse: list[float]
    frame_force_max: list[float]
    frame_energy_threshold: float | None
    frame_force_threshold: float | None
    accurate_ratio: float


class ConvergenceCriteria(BaseModel):
    """When the fine-tuning loop of a stage stops.

    Converged when EITHER every RMSE threshold that is set is met (``energy_rmse`` eV/atom,
    ``force_rmse`` eV/Å; with neither set this branch never converges) OR the fraction of
    frames within the per-frame thresholds (``frame_energy`` eV/atom, ``frame_force`` eV/Å on
    the per-frame force RMSE) is at least ``accurate_ratio`` (``None`` disables this branch).
    All comparisons are inclusive (``<=``, ``>=``).
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not be ignored

    energy_rmse: float | None = Field(default=None, gt=0)
    force_rmse: float | None = Field(default=None, gt=0)
    frame_energy: float | None = Field(default=0.001, gt=0)
    frame_force: float | None = Field(default=0.05, gt=0)
    accurate_ratio: float | None = Field(default=0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _has_a_criterion(self) -> ConvergenceCriteria:
        if self.accurate_ratio is not None and self.frame_energy is None and self.frame_force is None:
            raise ValueError("ConvergenceCriteria: accurate_ratio is set but frame_energy and frame_force are both None")
        if self.energy_rmse is None and self.force_rmse is None and self.accurate_ratio is None:
            raise ValueError("ConvergenceCriteria: no criterion set (energy_rmse, force_rmse, accurate_ratio all None)")
        return self

    def check(self, metrics: TestMetrics) -> tuple[bool, str]:
        """Decide convergence from test metrics.

        The accurate-frame ratio is recomputed from the per-frame errors with this object's
        ``frame_energy``/``frame_force``, whatever thresholds ``metrics`` was built with.

        Returns
        -------
        (converged, reason): a one-line human-readable reason with the numbers compared.
        """
        parts: list[str] = []
        rmse_oks = []  # one per RMSE threshold that is set
        for what, value, limit, unit in (("energy", metrics.energy_rmse, self.energy_rmse, "eV/atom"),
                                         ("force", metrics.force_rmse, self.force_rmse, "eV/Å")):
            if limit is not None:
                rmse_oks.append(value <= limit)
                parts.append(f"{what} RMSE {value:.4g} {'<=' if rmse_oks[-1] else '>'} {limit:.4g} {unit}")
        ratio_ok = False
        if self.accurate_ratio is not None:
            ratio = float(
                np.mean(
                    accurate_mask(metrics.frame_energy_error, metrics.frame_force_rmse, self.frame_energy, self.frame_force)
                )
            )
            ratio_ok = ratio >= self.accurate_ratio
            thresholds = [f"{t:.4g} {unit}" for t, unit in ((self.frame_energy, "eV/atom"), (self.frame_force, "eV/Å"))
                          if t is not None]
            parts.append(
                f"{ratio:.1%} of {metrics.n_frames} frames within {' and '.join(thresholds)} "
                f"({'>=' if ratio_ok else '<'} {self.accurate_ratio:.1%})"
            )
        converged = (bool(rmse_oks) and all(rmse_oks)) or ratio_ok
        return converged, ("converged: " if converged else "not converged: ") + "; ".join(parts)


class TrustWindow(BaseModel):
    """Which tested frames are added to the training set.

    With ``e = |energy error per atom|`` (eV/atom) and ``f`` the frame's force error (eV/Å;
    per-frame force RMSE, or largest atomic force error with ``force_measure="max"``), a frame
    is added exactly when

    - it is not too wrong: ``e <= energy_high`` and ``f <= force_high`` (bounds that are set),
      since larger errors point to a non-physical frame or a failed label; and
    - it is not already learnt: when at least one low bound is set, NOT(``e <= energy_low`` and
      ``f <= force_low`` over the low bounds that are set); a frame predicted well in energy
      but badly in forces still has something to teach.

    ``None`` bounds are unbounded; with no bound at all, every frame is added.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not be ignored

    energy_low: float | None = Field(default=None, ge=0)
    energy_high: float | None = Field(default=None, gt=0)
    force_low: float | None = Field(default=None, ge=0)
    force_high: float | None = Field(default=None, gt=0)
    force_measure: Literal["rmse", "max"] = "rmse"

    @model_validator(mode="after")
    def _low_below_high(self) -> TrustWindow:
        for q, lo, hi in (("energy", self.energy_low, self.energy_high), ("force", self.force_low, self.force_high)):
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"TrustWindow: {q}_low ({lo}) must be below {q}_high ({hi})")
        return self

    def select(self, errors: Any) -> list[int]:
        """Indices (ascending) of the frames to add to the training set, by the rule above.

        ``errors``: per-frame errors with ``frame_energy_error``, ``frame_force_rmse`` and
        ``frame_force_max`` (a :class:`TestMetrics` or ``evaluate.metrics.FrameErrors``).
        """
        f = errors.frame_force_rmse if self.force_measure == "rmse" else errors.frame_force_max
        keep = accurate_mask(errors.frame_energy_error, f, self.energy_high, self.force_high)  # not too wrong
        if self.energy_low is not None or self.force_low is not None:  # and not already learnt
            keep &= ~accurate_mask(errors.frame_energy_error, f, self.energy_low, self.force_low)
        return [int(i) for i in np.flatnonzero(keep)]
