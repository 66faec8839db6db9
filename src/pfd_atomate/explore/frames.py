"""Frames of an exploration MD: read from atomate2's ``ForceFieldTaskDocument``."""

from __future__ import annotations

from typing import Any

from pymatgen.core.trajectory import Trajectory

from pfd_atomate.data import Dataset, Frame, as_dataset


def _field(doc: Any, key: str) -> Any:
    """A field of a task document given as a (resolved) object or as its stored dict."""
    return doc.get(key) if isinstance(doc, dict) else getattr(doc, key, None)


def md_frames(task_doc: Any) -> Dataset:
    """The unlabelled frames of one MD run: its trajectory without the starting structure.

    Parameters
    ----------
    task_doc: atomate2 ``ForceFieldTaskDocument`` of a ``ForceFieldMDMaker`` job (or its dict),
        with ``objects["trajectory"]`` (a pymatgen ``Trajectory``; ``store_trajectory="partial"``).

    Returns
    -------
    Dataset of ``len(trajectory) - 1`` frames (positions Å, cell Å, no labels: the MD model's
    energies are not labels), named and sourced after the task's last tag (``"md:nvt:T600"``).

    Raises
    ------
    ValueError: the document has no trajectory (the MD ran with ``store_trajectory="no"``).
    """
    objects = _field(task_doc, "objects") or {}
    trajectory = next((v for k, v in objects.items() if str(getattr(k, "value", k)) == "trajectory"), None)
    if trajectory is None:
        raise ValueError("the MD task document has no trajectory: run its ForceFieldMDMaker with "
                         "store_trajectory='partial'")
    if isinstance(trajectory, dict):
        trajectory = Trajectory.from_dict(trajectory)
    source = (_field(task_doc, "tags") or ["md"])[-1]
    frames = [Frame.from_structure(trajectory.get_structure(i), source=source) for i in range(1, len(trajectory))]
    return Dataset(frames=frames, name=source)


def candidate_frames(candidate: Any) -> Dataset | None:
    """Candidate frames from an MD task document or a (stored) dataset; ``None`` stays ``None``."""
    if candidate is None:
        return None
    if _field(candidate, "objects") is not None or _field(candidate, "forcefield_name") is not None:
        return md_frames(candidate)
    return as_dataset(candidate)
