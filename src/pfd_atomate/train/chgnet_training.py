"""CHGNet fine-tuning pieces: energy re-referencing, layer freezing, weighted sampling, graphs.

Energy references: a DFT code's total energies differ from CHGNet's (Materials Project compatible)
energies by a large per-element constant (CP2K GTH Si is about -107 eV/atom, CHGNet about
-5.4 eV/atom). Before any gradient step the per-element reference energies of CHGNet's composition
model (``AtomRef``) are re-fitted by least squares to the labels, the analogue of deepmd-kit's
fine-tune "change bias" (PFD SI, fine-tuning section).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chgnet.model import CHGNet


def rereference_energies(model: CHGNet, graphs: Sequence[Any], energies: Sequence[float]) -> dict[str, float]:
    """Least-squares re-fit of CHGNet's per-element reference energies to labels.

    Solves min_δ ‖X δ - (e_label - e_model)‖² over the elements present, with X the
    composition features of CHGNet's ``AtomRef`` (atom fractions when intensive, counts
    otherwise), and adds δ to the AtomRef weights. Elements absent from the data keep
    their reference (``AtomRef.fit`` would zero them). With a single composition only the
    composition-weighted sum of δ is determined; the minimum-norm solution is used.
    Analogue of deepmd-kit's fine-tune "change bias" (PFD SI, fine-tuning).

    Parameters
    ----------
    model: CHGNet with an ``AtomRef`` composition model (modified in place).
    graphs: crystal graphs of the n_frames training frames.
    energies: labels in the model's energy unit, shape (n_frames,) (eV/atom when
        ``model.is_intensive``, else eV).

    Returns
    -------
    Shift added to each element's reference energy, {symbol: eV/atom}.

    Raises
    ------
    ValueError: the model has no AtomRef composition model.
    """
    import torch
    from ase.data import chemical_symbols
    from chgnet.model.composition_model import AtomRef

    atom_ref = model.composition_model
    if not isinstance(atom_ref, AtomRef):
        raise ValueError("CHGNet model has no AtomRef composition model to re-reference")
    model.eval()
    with torch.no_grad():
        results = model.predict_graph(list(graphs), task="e", batch_size=16)  # a dict for a single graph
    predicted = [float(r["e"]) for r in ([results] if isinstance(results, dict) else results)]
    # AtomRef's features: element counts (divided by n_atoms when intensive), (n_frames, 94)
    features = np.zeros((len(graphs), atom_ref.max_num_elements))
    for row, graph in zip(features, graphs, strict=True):
        z = graph.atomic_number.cpu().numpy()
        row[:] = np.bincount(z - 1, minlength=atom_ref.max_num_elements) / (len(z) if atom_ref.is_intensive else 1)
    present = np.flatnonzero(features.any(axis=0))
    residual = np.asarray(energies, dtype=float) - np.asarray(predicted)
    delta, *_ = np.linalg.lstsq(features[:, present], residual, rcond=None)
    with torch.no_grad():
        weight = atom_ref.fc.weight
        weight[0, torch.as_tensor(present)] += torch.as_tensor(delta, dtype=weight.dtype, device=weight.device)
    return {chemical_symbols[z + 1]: float(d) for z, d in zip(present, delta, strict=True)}


def frame_sampling_weights(n_frames: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Per-frame sampling probabilities that give dataset i the share weights[i] / sum(weights).

    Parameters
    ----------
    n_frames: frames per dataset (datasets are consecutive blocks of frames).
    weights: relative weight per dataset, each > 0.

    Returns
    -------
    Probabilities, shape (sum(n_frames),), summing to 1 over the non-empty datasets.
    """
    per_frame = np.concatenate([np.full(n, w / n) for n, w in zip(n_frames, weights, strict=True) if n > 0])
    return per_frame / per_frame.sum()


def freeze_layers(model: CHGNet, embedding: bool = True, n_blocks: int = 0) -> None:
    """Freeze early CHGNet layers for fine-tuning on little data.

    Parameters
    ----------
    model: CHGNet (``requires_grad`` is switched off in place).
    embedding: freeze atom/bond/angle embeddings and radial/angular basis expansions.
    n_blocks: freeze the first ``n_blocks`` interaction blocks (atom, bond and angle
        layers); ``n_blocks=3`` with embedding reproduces chgnet's fine-tuning example.

    Raises
    ------
    ValueError: ``n_blocks`` leaves nothing but the readout (>= the model's ``n_conv``).
    """
    if n_blocks >= model.n_conv:
        raise ValueError(f"n_frozen_blocks={n_blocks} must be < n_conv={model.n_conv}")
    modules = []
    if embedding:
        modules += [
            model.atom_embedding,
            model.bond_embedding,
            model.angle_embedding,
            model.bond_basis_expansion,
            model.angle_basis_expansion,
            model.bond_weights_ag,
            model.bond_weights_bg,
        ]
    for layers in (model.atom_conv_layers, model.bond_conv_layers, model.angle_layers):
        # bond/angle layers are a list of None when the model does not update them
        modules += [layer for layer in list(layers)[:n_blocks] if layer is not None]
    for module in modules:
        for param in module.parameters():
            param.requires_grad = False


def graphs_or_raise(data: Any, frames: Sequence[Any]) -> list[Any]:
    """Crystal graphs of all frames; chgnet's ``StructureData`` silently swaps failures."""
    graphs = [data[i][0] for i in range(len(data))]
    if data.failed_idx:
        bad = sorted(data.failed_idx)[:10]
        formulas = [frames[i].to_structure().composition.reduced_formula for i in bad]
        raise ValueError(f"CHGNet could not build graphs for frames {bad} ({formulas}); isolated atoms?")
    return graphs
