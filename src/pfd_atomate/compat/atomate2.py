"""atomate2 <= 0.1.5 cannot parse the output of a spin-restricted (RKS) CP2K run.

``atomate2.cp2k.schemas.calculation.CalculationInput.cleanup_dft`` calls ``.upper()`` on every
parsed DFT parameter and fails on the integer multiplicity (only UKS outputs pass, because
``any()`` stops at "UKS"). :func:`apply` replaces that validator by one that skips non-strings,
when the installed atomate2 is one that has the bug (<= :data:`FIXED_AFTER`) and the bug is
really there (:func:`needed`). pfd-atomate applies it on import of :mod:`pfd_atomate.label`, so in
every process that parses a CP2K label.
"""

from __future__ import annotations

import dataclasses

from packaging.version import Version

from pfd_atomate.compat import installed

#: last atomate2 release known to need the patch
FIXED_AFTER = Version("0.1.5")


def _cleanup_dft_rks_safe(cls, dft: dict | None) -> dict | None:
    """atomate2's ``cleanup_dft`` (mark UKS runs) without failing on non-string values."""
    if dft and any(isinstance(v, str) and v.upper() == "UKS" for v in dft.values()):
        dft["UKS"] = True
    return dft


def needed() -> bool:
    """Whether this atomate2 fails to validate the DFT section of an RKS CP2K run."""
    from atomate2.cp2k.schemas.calculation import CalculationInput

    try:
        CalculationInput.cleanup_dft({"rks": "RKS", "multiplicity": 1})
    except AttributeError:
        return True
    return False


def apply() -> bool:
    """Patch atomate2's validator if this version needs it (idempotent).

    Returns
    -------
    bool: True if the validator was faulty and has been replaced.
    """
    if installed("atomate2") > FIXED_AFTER or not needed():
        return False
    from atomate2.cp2k.schemas.calculation import Calculation, CalculationInput
    from atomate2.cp2k.schemas.task import TaskDocument

    validators = CalculationInput.__pydantic_decorators__.field_validators
    validators["cleanup_dft"] = dataclasses.replace(
        validators["cleanup_dft"], func=classmethod(_cleanup_dft_rks_safe).__get__(None, CalculationInput)
    )
    CalculationInput.cleanup_dft = classmethod(_cleanup_dft_rks_safe)
    # models that nest CalculationInput keep a copy of its old validator until rebuilt
    for model in (CalculationInput, Calculation, TaskDocument):
        model.model_rebuild(force=True)
    return True
