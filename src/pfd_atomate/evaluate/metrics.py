"""Prediction errors of a model on a labelled test set (PFD step 5).

In each fine-tuning iteration the model ``M_i`` is tested on the newly labelled iteration
dataset ``D_i`` (PFD paper, Fig. 1b); the per-frame errors decide convergence
(:class:`~pfd_atomate.evaluate.schemas.ConvergenceCriteria`) and which frames are added to the
training set (:class:`~pfd_atomate.evaluate.schemas.TrustWindow`).

Conventions (those of ``dp test``): energy errors are per atom, ``(E_pred - E_ref) / n_atoms``
in eV/atom; force RMSE/MAE run over the Cartesian components of the atomic forces, eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pfd_atomate.data import Dataset
from pfd_atomate.evaluate.schemas import TestMetrics, accurate_mask

#: largest position/cell difference (Å) for two frames to count as the same configuration
MATCH_ATOL = 1e-4


@dataclass(frozen=True)
class FrameErrors:
    """Per-frame prediction errors; all arrays have shape (n_frames,).

    Attributes
    ----------
    n_atoms: atoms per frame.
    frame_energy_error: signed energy error per atom, ``(E_pred - E_ref) / n_atoms``, eV/atom.
    frame_force_rmse: RMSE over the frame's 3 * n_atoms force components, eV/Å.
    frame_force_mae: mean absolute error over the same components, eV/Å.
    frame_force_max: largest atomic force error ``max_i |F_pred,i - F_ref,i|`` (vector norm), eV/Å.
    """

    n_atoms: np.ndarray
    frame_energy_error: np.ndarray
    frame_force_rmse: np.ndarray
    frame_force_mae: np.ndarray
    frame_force_max: np.ndarray

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.n_atoms)

    @property
    def energy_rmse(self) -> float:
        """RMSE of the energy per atom over frames, eV/atom."""
        return float(np.sqrt(np.mean(self.frame_energy_error**2)))

    @property
    def energy_rmse_offset_removed(self) -> float:
        """RMSE of the energy per atom after removing the mean error, eV/atom: a model whose energies
        sit on another reference (a foundation model against this DFT) is compared on shape alone."""
        return float(np.std(self.frame_energy_error))

    @property
    def energy_mae(self) -> float:
        """Mean absolute energy error per atom over frames, eV/atom."""
        return float(np.mean(np.abs(self.frame_energy_error)))

    @property
    def force_rmse(self) -> float:
        """RMSE over all force components of all atoms of all frames, eV/Å."""
        return float(np.sqrt(np.sum(self.n_atoms * self.frame_force_rmse**2) / np.sum(self.n_atoms)))

    @property
    def force_mae(self) -> float:
        """Mean absolute error over all force components of all atoms of all frames, eV/Å."""
        return float(np.sum(self.n_atoms * self.frame_force_mae) / np.sum(self.n_atoms))

    def to_metrics(self, frame_energy: float | None = 0.001, frame_force: float | None = 0.05) -> TestMetrics:
        """Summary as a serializable :class:`TestMetrics`; ``accurate_ratio`` uses the given per-frame
        thresholds (eV/atom, eV/Å; ``None`` = not checked, so with both ``None`` the ratio is 1)."""
        mask = accurate_mask(self.frame_energy_error, self.frame_force_rmse, frame_energy, frame_force)
        return TestMetrics(
            n_frames=self.n_frames,
            energy_rmse=self.energy_rmse,
            energy_mae=self.energy_mae,
            force_rmse=self.force_rmse,
            force_mae=self.force_mae,
            frame_energy_error=self.frame_energy_error.tolist(),
            frame_force_rmse=self.frame_force_rmse.tolist(),
            frame_force_max=self.frame_force_max.tolist(),
            frame_energy_threshold=frame_energy,
            frame_force_threshold=frame_force,
            accurate_ratio=float(np.mean(mask)),
        )


def frame_errors(reference: Dataset, predicted: Dataset) -> FrameErrors:
    """Compare a model's predictions with reference labels, frame by frame.

    Parameters
    ----------
    reference: labelled frames (e.g. DFT), the ground truth.
    predicted: the same frames, in the same order, labelled by the model.

    Returns
    -------
    FrameErrors with arrays of shape (n_frames,).

    Raises
    ------
    ValueError: an empty dataset, different frame counts, an unlabelled frame, or a frame
        whose species, positions or cell differ (tolerance :data:`MATCH_ATOL` Å).
    """
    if len(reference) == 0:
        raise ValueError("frame_errors: the reference dataset is empty")
    if len(reference) != len(predicted):
        raise ValueError(f"frame_errors: {len(reference)} reference frames but {len(predicted)} predicted frames")
    for name, data in (("reference", reference), ("predicted", predicted)):
        missing = [i for i, f in enumerate(data.frames) if not f.is_labelled]
        if missing:
            raise ValueError(f"frame_errors: {name} frames {missing[:10]} have no energy/forces")

    n_atoms, e_err, f_rmse, f_mae, f_max = [], [], [], [], []
    for i, (ref, pred) in enumerate(zip(reference.frames, predicted.frames)):
        _check_same_configuration(i, ref, pred)
        df = np.asarray(pred.forces, dtype=float) - np.asarray(ref.forces, dtype=float)
        n_atoms.append(ref.n_atoms)
        e_err.append((pred.energy - ref.energy) / ref.n_atoms)
        f_rmse.append(np.sqrt(np.mean(df**2)))
        f_mae.append(np.mean(np.abs(df)))
        f_max.append(np.max(np.linalg.norm(df, axis=1)))
    return FrameErrors(
        n_atoms=np.array(n_atoms, dtype=int),
        frame_energy_error=np.array(e_err, dtype=float),
        frame_force_rmse=np.array(f_rmse, dtype=float),
        frame_force_mae=np.array(f_mae, dtype=float),
        frame_force_max=np.array(f_max, dtype=float),
    )


def _check_same_configuration(i: int, ref, pred) -> None:
    if ref.species != pred.species:
        raise ValueError(f"frame_errors: frame {i} has different species in reference and prediction")
    if not np.allclose(ref.cell, pred.cell, rtol=0, atol=MATCH_ATOL):
        raise ValueError(f"frame_errors: frame {i} has different cells in reference and prediction")
    dpos = np.max(np.abs(np.asarray(ref.positions) - np.asarray(pred.positions)))
    if dpos > MATCH_ATOL:
        raise ValueError(f"frame_errors: frame {i} positions differ by up to {dpos:.3g} Å between reference and prediction")
    for name, frame in (("reference", ref), ("predicted", pred)):
        if np.shape(frame.forces) != (frame.n_atoms, 3):
            raise ValueError(f"frame_errors: frame {i} {name} forces have shape {np.shape(frame.forces)}")
