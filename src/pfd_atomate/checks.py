"""Checks of Maker settings before any job exists: each error names the field, the value and what is allowed.

Makers call these from ``__post_init__``, so a bad setting fails when the Maker is built (or a
config file is read), long before the first DFT label is paid for.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(owner: str, field: str, value: Any, minimum: int = 0) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{owner}.{field} must be an integer >= {minimum}, got {value!r}")


def check_choice(owner: str, field: str, value: Any, choices: Collection[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{field} must be one of {sorted(choices)}, got {value!r}")


def check_number(owner: str, field: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in the given interval.

    ``low_open``/``high_open`` exclude the bound itself (``0 < x`` rather than ``0 <= x``).
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "" if low is None else f"{low} {'<' if low_open else '<='} "
        right = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(f"{owner}.{field} must be a finite number with {left}{field}{right}, got {value!r}")


def check_supercell(owner: str, field: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or three integers >= 1."""
    if value is None:
        return
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_int(n) and n >= 1 for n in value)):
        raise ValueError(f"{owner}.{field} must be None or three integers >= 1, got {value!r}")
