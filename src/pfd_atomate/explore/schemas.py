"""Exploration task groups and stages (the MD output is atomate2's ``ForceFieldTaskDocument``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator


class TaskGroup(BaseModel):
    """A group of MD exploration tasks: every structure × temperature × pressure.

    Units: temperatures in K, pressures in GPa (converted to atomate2's kbar internally),
    ``time_step`` in fs. ``pressures`` is ignored for ``ensemble="nvt"``. ``supercell`` repeats each
    starting structure for this group only (e.g. one group in cells larger than the model's cutoff beside
    groups in the input cell); ``None`` takes the Maker's own supercell setting (``md_supercell``).
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
