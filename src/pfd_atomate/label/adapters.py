"""Turn atomate2 static-job task documents into labels: energy (eV), forces (eV/Å), virial (eV).

Each code stores its results in its own units and sign convention:

==========  ===========================  ===========  ========  ====================
code        task document                forces       stress    stress sign
==========  ===========================  ===========  ========  ====================
``vasp``    emmet ``TaskDoc``            eV/Å         kBar      positive = compressive
``ase``     ``ForceFieldTaskDocument``   eV/Å         kBar      positive = compressive
            (any atomate2 ASE maker)
``cp2k``    atomate2 CP2K                Hartree/Bohr GPa       positive = compressive
            ``TaskDocument``
==========  ===========================  ===========  ========  ====================

Notes: VASP prints the stress in kBar with a positive pressure for a compressed cell
(the opposite of ASE, whose stress is positive under tension). atomate2's ASE/force-field
documents convert ASE's stress to that VASP convention
(``atomate2.ase.schemas.convert_stress_from_voigt_to_symm``: ``-10 / GPa`` times the ASE
stress). CP2K prints forces in atomic units and the analytical stress tensor in GPa, and
pymatgen's ``Cp2kOutput`` keeps both as printed (energies are converted to eV).

All energies are in eV. Our virial is ``-stress_ASE * volume``, so with the compressive-positive
stress ``s`` of every code above: ``virial = s * volume`` (after converting ``s`` to eV/Å^3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import units


@dataclass(frozen=True)
class LabelUnits:
    """Units of a code's task document.

    Attributes
    ----------
    forces_to_ev_per_angstrom: factor from the stored forces to eV/Å.
    stress_to_ev_per_angstrom3: factor from the stored stress to eV/Å^3, for a stress that
        is positive under compression (VASP convention).
    """

    forces_to_ev_per_angstrom: float
    stress_to_ev_per_angstrom3: float


CONVENTIONS: dict[str, LabelUnits] = {
    "vasp": LabelUnits(1.0, 1e3 * units.bar),  # kBar
    "ase": LabelUnits(1.0, 1e3 * units.bar),
    "cp2k": LabelUnits(units.Hartree / units.Bohr, units.GPa),
}

# task-document attribute paths shared by the three documents
_FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "structure": ("structure",),  # final structure of the task
    "energy": ("output", "energy"),
    "forces": ("output", "forces"),
    "stress": ("output", "stress"),
    "state": ("state",),
    "dir_name": ("dir_name",),  # where the code ran (to catch jobs sharing a directory)
}


class LabelError(ValueError):
    """A task document that gives no usable label (missing, non-finite or mismatched data)."""


def code_of_maker(maker: Any) -> str:
    """Which document convention an atomate2 static maker's jobs produce.

    Parameters
    ----------
    maker: an atomate2 Maker (VASP, CP2K, or any ASE/force-field maker).

    Returns
    -------
    str: a key of :data:`CONVENTIONS`.

    Raises
    ------
    ValueError: for a maker whose task document has no adapter here.
    """
    checks = (
        ("vasp", "atomate2.vasp.jobs.base", "BaseVaspMaker"),
        ("cp2k", "atomate2.cp2k.jobs.base", "BaseCp2kMaker"),
        ("ase", "atomate2.ase.jobs", "AseMaker"),
    )
    for code, module, name in checks:
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:  # pragma: no cover - atomate2 extras missing
            continue
        if isinstance(maker, cls):
            return code
    raise ValueError(
        f"no label adapter for {type(maker).__module__}.{type(maker).__name__}; "
        "use an atomate2 VASP, CP2K or force-field (ASE) static maker"
    )


def task_doc_fields(doc: Any) -> dict[str, Any]:
    """The task-document fields a label needs: structure, energy, forces, stress, state, dir_name.

    Works on a task document object, its dict form, or a jobflow ``OutputReference`` to it
    (then each value is a reference to that field, resolved when a job runs).
    """
    fields = {}
    for key, path in _FIELD_PATHS.items():
        value = doc
        for attr in path:
            if value is None:
                break
            value = value.get(attr) if isinstance(value, Mapping) else getattr(value, attr, None)
        fields[key] = value
    return fields


def labels_from_fields(fields: Mapping[str, Any], code: str):
    """Convert task-document fields to a labelled structure.

    Parameters
    ----------
    fields: as returned by :func:`task_doc_fields` (resolved values).
    code: key of :data:`CONVENTIONS` ("vasp", "cp2k", "ase").

    Returns
    -------
    structure: pymatgen ``Structure`` the labels belong to (the task's final structure).
    energy: float, eV.
    forces: array (n_atoms, 3), eV/Å.
    virial: array (3, 3), eV, or ``None`` when the document has no stress.

    Raises
    ------
    LabelError: no document, failed task, missing/non-finite energy or forces, wrong shapes.
    KeyError: unknown ``code``.
    """
    from pymatgen.core import Structure

    conv = CONVENTIONS[code]
    if all(fields.get(k) is None for k in _FIELD_PATHS):
        raise LabelError("no output in the JobStore: the static job failed or did not run")
    state = fields.get("state")
    state = getattr(state, "value", state)
    if isinstance(state, str) and state.lower() == "failed":
        raise LabelError("task state is 'failed'")
    structure = fields.get("structure")
    if isinstance(structure, Mapping):
        structure = Structure.from_dict(structure)
    if not isinstance(structure, Structure):
        raise LabelError(f"task document has no periodic final structure (got {type(structure).__name__})")
    n_atoms = len(structure)

    energy = fields.get("energy")
    if energy is None or not math.isfinite(float(energy)):
        raise LabelError(f"energy missing or not finite: {energy!r}")
    if fields.get("forces") is None:
        raise LabelError("forces missing from the task document")
    forces = np.asarray(fields["forces"], dtype=float) * conv.forces_to_ev_per_angstrom
    if forces.shape != (n_atoms, 3):
        raise LabelError(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if not np.all(np.isfinite(forces)):
        raise LabelError("forces contain non-finite values")

    virial = None
    if fields.get("stress") is not None:
        stress = np.asarray(fields["stress"], dtype=float)
        if stress.shape != (3, 3) or not np.all(np.isfinite(stress)):
            raise LabelError(f"stress must be a finite 3x3 tensor, got shape {stress.shape}")
        virial = stress * conv.stress_to_ev_per_angstrom3 * structure.volume
    return structure, float(energy), forces, virial
