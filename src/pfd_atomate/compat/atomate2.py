"""Two bugs of atomate2 <= 0.1.5 in CP2K labelling, patched when (and only while) they are there.

1. It cannot parse the output of a spin-restricted (RKS) CP2K run:
   ``atomate2.cp2k.schemas.calculation.CalculationInput.cleanup_dft`` calls ``.upper()`` on every
   parsed DFT parameter and fails on the integer multiplicity (only UKS outputs pass, because
   ``any()`` stops at "UKS"). The patch replaces that validator by one that skips non-strings.
2. Generating a CP2K input changes every CP2K input-set generator of the process:
   ``Cp2kInputGenerator._get_input_set`` copies ``config_dict["cp2k_input"]`` shallowly and
   ``recursive_update`` then writes the user's settings into its nested dicts, which belong to the
   module-level base set that every generator's ``config_dict`` is. A Maker's JSON form, and so a
   label's key (:mod:`pfd_atomate.label.cache`), then differ before and after the first CP2K input
   of a process (a label could be paid for twice), and one labeller's basis sets leak into the
   next one's settings. The patch makes ``recursive_update`` return an updated copy. Upstream
   (atomate2 0.1.5 and its main branch as of 2026-12) still copies shallowly; no issue found.

:func:`apply` patches each when the installed atomate2 is one that has the bug
(<= :data:`FIXED_AFTER`) and the bug is really there (:func:`needed`, :func:`config_leak_needed`).
pfd-atomate applies it on import of :mod:`pfd_atomate.label`, so in every process that writes a
CP2K input or parses a CP2K label.
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


#: atomate2's own ``recursive_update``, once the patch has replaced it
upstream_recursive_update = None


def _recursive_update_copy(d: dict, u: dict) -> dict:
    """atomate2's ``recursive_update`` (``u`` merged into ``d``, nested dicts too) into a new dict, ``d`` unchanged."""
    out = dict(d)
    for key, value in u.items():
        out[key] = _recursive_update_copy(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def config_leak_needed() -> bool:
    """Whether this atomate2's CP2K ``recursive_update`` writes into the nested dicts it is given."""
    from atomate2.cp2k.sets import base

    probe: dict = {"inner": {}}
    base.recursive_update(probe, {"inner": {"probe": 1}})
    return bool(probe["inner"])


def apply() -> bool:
    """Patch atomate2 where this version needs it (idempotent).

    Returns
    -------
    bool: True if any patch was applied now.
    """
    if installed("atomate2") > FIXED_AFTER:
        return False
    patched = False
    if config_leak_needed():
        from atomate2.cp2k.sets import base

        global upstream_recursive_update  # noqa: PLW0603 - kept so tests can tell when upstream is fixed
        upstream_recursive_update = base.recursive_update
        base.recursive_update = _recursive_update_copy  # the name _get_input_set looks up at call time
        patched = True
    return _apply_rks() or patched


def _apply_rks() -> bool:
    """Replace atomate2's ``cleanup_dft`` validator if it fails on RKS outputs."""
    if not needed():
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
