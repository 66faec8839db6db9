"""Parity plots of model predictions against reference labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfd_atomate.data import Dataset
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.validation.figures import pyplot, save_figure


def parity_plot(
    reference: Dataset,
    predictions: dict[str, Dataset],
    path: str | Path,
    title: str = "",
    reference_name: str = "DFT",
) -> Path:
    """Energy (eV/atom) and force-component (eV/Å) parity plots, one colour per model.

    Parameters
    ----------
    reference: labelled frames (ground truth).
    predictions: model name → the same frames labelled by that model.
    path: PNG to write.
    title: figure title.
    reference_name: axis label of the reference.

    Returns
    -------
    The path written.

    Raises
    ------
    ValueError: a prediction set does not match the reference frames.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.6))
    e_ref = reference.energies_per_atom()
    f_ref = np.concatenate([np.asarray(f.forces).ravel() for f in reference.frames])
    for name, pred in predictions.items():
        err = frame_errors(reference, pred)
        e_pred = pred.energies_per_atom()
        f_pred = np.concatenate([np.asarray(f.forces).ravel() for f in pred.frames])
        ax_e.scatter(e_ref, e_pred, s=14, alpha=0.7,
                     label=f"{name}: RMSE {1000 * err.energy_rmse:.2f} meV/atom")
        ax_f.scatter(f_ref, f_pred, s=6, alpha=0.5, label=f"{name}: RMSE {1000 * err.force_rmse:.0f} meV/Å")
    for ax, unit in ((ax_e, "energy (eV/atom)"), (ax_f, "force component (eV/Å)")):
        lo, hi = ax.get_xlim()
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(f"{reference_name} {unit}")
        ax.set_ylabel(f"model {unit}")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or f"parity vs {reference_name} ({len(reference)} frames)")
    return save_figure(fig, path)
