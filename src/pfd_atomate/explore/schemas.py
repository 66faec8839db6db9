"""Exploration task groups and stages (the MD output is atomate2's ``ForceFieldTaskDocument``)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator
from pymatgen.core import Lattice, Structure


def repeats_for_width(lattice: Lattice, min_length: float) -> tuple[int, int, int]:
    """Repeats along a, b, c that make every perpendicular width of the cell at least ``min_length`` (Å).

    The perpendicular width across the planes spanned by b and c is V / |b x c|, the inverse length of the
    reciprocal vector a* (pymatgen's crystallographic reciprocal lattice): an atom's nearest periodic image is at
    least the smallest width away, so a cell wider than a model's cutoff shows no atom its own image.
    """
    inverse_widths = lattice.reciprocal_lattice_crystallographic.abc
    return tuple(max(1, math.ceil(min_length * k - 1e-9)) for k in inverse_widths)  # type: ignore[return-value]


class TaskGroup(BaseModel):
    """A group of MD exploration tasks: every structure × temperature × pressure.

    Units: temperatures in K, pressures in GPa (converted to atomate2's kbar internally),
    ``time_step`` in fs. ``pressures`` is ignored for ``ensemble="nvt"``. ``supercell`` repeats each
    starting structure for this group only (e.g. one group in cells larger than the model's cutoff beside
    groups in the input cell); ``min_length`` (Å) repeats each one until every perpendicular width of its cell
    is at least that long (one rule for structures of different sizes); with neither, the Maker's own
    supercell setting (``md_supercell``) applies. :meth:`repeats` is that rule.

    Raises
    ------
    pydantic.ValidationError: a setting out of range, or both ``supercell`` and ``min_length``.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not be ignored

    temperatures: list[float] = Field(description="K")
    pressures: list[float] = Field(default_factory=lambda: [0.0], description="GPa (npt only)")
    ensemble: Literal["nvt", "npt"] = "nvt"
    n_steps: int = Field(1000, ge=1)
    time_step: float = Field(2.0, gt=0, description="fs")
    traj_interval: int = Field(50, ge=1, description="keep a frame every this many steps")
    thermostat_time: float = Field(100.0, gt=0, description="thermostat time constant, fs")
    barostat_time: float = Field(1000.0, gt=0, description="barostat time constant, fs (npt)")
    bulk_modulus: float = Field(100.0, gt=0, description="guess of the bulk modulus for the Berendsen barostat, GPa")
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="repeats of each starting structure along a, b, c for this group; None: the Maker's")
    min_length: float | None = Field(
        None, gt=0, description="Å: repeat each starting structure until every perpendicular width of its MD cell "
                                "is at least this (e.g. the student's cutoff); None: supercell, else the Maker's")

    @model_validator(mode="after")
    def _one_cell_rule(self) -> TaskGroup:
        if self.supercell is not None and self.min_length is not None:
            raise ValueError(f"TaskGroup: give supercell or min_length, not both (got supercell={self.supercell}, "
                             f"min_length={self.min_length})")
        return self

    def repeats(self, structure: Structure, maker_supercell: tuple[int, int, int] | None = None
                ) -> tuple[int, int, int] | None:
        """Repeats of ``structure`` for this group's MD: ``min_length``'s, else ``supercell``, else the Maker's
        ``maker_supercell`` (None: the structure as it is)."""
        if self.min_length is not None:
            return repeats_for_width(structure.lattice, self.min_length)
        return self.supercell or maker_supercell

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, v: list[float]) -> list[float]:
        if not v or any(t <= 0 for t in v):
            raise ValueError(f"temperatures must be a non-empty list of positive K, got {v}")
        return v

    def conditions(self) -> list[tuple[float, float | None]]:
        """(temperature K, pressure GPa or None) pairs of this group."""
        if self.ensemble == "nvt":
            return [(t, None) for t in self.temperatures]
        return [(t, p) for t in self.temperatures for p in self.pressures]


class Stage(BaseModel):
    """An exploration stage: task groups explored together until the fine-tune loop converges."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not be ignored

    task_groups: list[TaskGroup]
    name: str = ""
