"""Exploration: short MD with the current model through atomate2's ``ForceFieldMDMaker``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ase import units
from atomate2.forcefields.md import ForceFieldMDMaker
from jobflow import Job, Maker
from pymatgen.core import Structure

from pfd_atomate.data import ModelFile
from pfd_atomate.explore.schemas import TaskGroup
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.with_model import run_with_model


@dataclass
class ExploreMaker(Maker):
    """Explore with MD driven by a trained model (PFD step 3).

    The MD is atomate2's own :class:`ForceFieldMDMaker` job (``md_maker``: thermostat, barostat
    and any ASE options can be set there), run through
    :func:`~pfd_atomate.train.with_model.run_with_model` with the stored model; its output is
    atomate2's ``ForceFieldTaskDocument`` whose ``objects["trajectory"]`` (pymatgen
    ``Trajectory``, in the ``data`` store) holds the frames. This Maker sets temperature,
    pressure, ensemble and length per task; read the frames with
    :func:`~pfd_atomate.explore.frames.md_frames`.

    Parameters
    ----------
    name: job name.
    backend: trainer backend that knows how to build a calculator for the model.
    md_maker: template for the MD runs (a trajectory is always stored: it is what exploration is for).
    """

    name: str = "pfd explore"
    backend: TrainerBackend = field(default=None)  # type: ignore[assignment]
    md_maker: ForceFieldMDMaker = field(
        default_factory=lambda: ForceFieldMDMaker(force_field_name="DeepMD", store_trajectory="partial")
    )

    def md_task(self, task_group: TaskGroup, temperature: float, pressure: float | None = None,
                seed: int | None = None) -> ForceFieldMDMaker:
        """The ``ForceFieldMDMaker`` of one task (K, GPa; model not set yet).

        NVT defaults to Langevin and NPT to Berendsen dynamics with the task group's time
        constants (atomate2's default NPT dynamics needs damping constants it does not set).
        """
        tg = task_group
        md_kwargs = dict(self.md_maker.ase_md_kwargs or {})
        dynamics = self.md_maker.dynamics
        if tg.ensemble == "npt" and dynamics is None:
            dynamics = "berendsen"
            md_kwargs.setdefault("taut", tg.thermostat_time * units.fs)
            md_kwargs.setdefault("taup", tg.barostat_time * units.fs)
            md_kwargs.setdefault("compressibility_au", 1.0 / (tg.bulk_modulus * units.GPa))
        elif tg.ensemble == "nvt" and dynamics is None:
            dynamics = "langevin"
            md_kwargs.setdefault("friction", 1.0 / (tg.thermostat_time * units.fs))
        label = f"md:{tg.ensemble}:T{temperature:g}" + ("" if pressure is None else f":P{pressure:g}")
        return dataclasses.replace(
            self.md_maker,
            ensemble=tg.ensemble,
            dynamics=dynamics,
            ase_md_kwargs=md_kwargs,
            temperature=temperature,
            # GPa -> atomate2's kbar
            pressure=None if pressure is None or tg.ensemble == "nvt" else pressure * units.GPa / (1e3 * units.bar),
            n_steps=tg.n_steps,
            time_step=tg.time_step,
            traj_interval=tg.traj_interval,
            mb_velocity_seed=seed,
            store_trajectory="partial",  # the frames are what exploration is for
            tags=[*(self.md_maker.tags or []), label],  # md_frames names the frames' source after it
        )

    def make(
        self,
        model: ModelFile,
        structure: Structure,
        temperature: float,
        pressure: float | None = None,
        task_group: TaskGroup | None = None,
        seed: int | None = None,
    ) -> Job:
        """One MD task: a job whose output becomes atomate2's ``ForceFieldTaskDocument``.

        Parameters
        ----------
        model: model driving the MD (ModelFile, usually an OutputReference to a training job).
        structure: starting structure.
        temperature: K.
        pressure: GPa (npt only).
        task_group: MD settings (ensemble, n_steps, time step fs, trajectory interval).
        seed: seed of the Maxwell-Boltzmann initial velocities.

        The job raises ``ValueError`` when it runs if the model is missing or does not know the
        structure's elements (checked before any MD step).
        """
        md = self.md_task(task_group or TaskGroup(temperatures=[temperature]), temperature, pressure, seed)
        task = run_with_model(md, self.backend, model, structure)
        task.name = self.name
        return task


def explore_task_jobs(
    maker: ExploreMaker,
    model: Any,
    structures: Sequence[Structure],
    task_groups: Sequence[TaskGroup],
    name_prefix: str,
    seed: int = 0,
    supercell: tuple[int, int, int] | None = None,
) -> list:
    """One exploration job per task group × (temperature, pressure) × starting structure.

    Parameters
    ----------
    maker: the exploration Maker (backend and MD template).
    model: the model driving the MD (usually an OutputReference to a ModelFile).
    structures: starting structures (each expanded by :meth:`TaskGroup.repeats`: the group's
        ``min_length`` or ``supercell``, else ``supercell``, if given).
    task_groups: MD conditions.
    name_prefix: job names are ``"{name_prefix} g<group> T<K>[ P<GPa>] #<structure>"``.
    seed: seed of the first job's initial velocities; each further job adds one.

    Each job carries jobflow metadata ``structure_index``: the position of its starting structure in
    ``structures`` (selection shares its picks among structures by it).
    """
    jobs = []
    for g, group in enumerate(task_groups):
        starts = [s * cell if (cell := group.repeats(s, supercell)) else s for s in structures]
        for temperature, pressure in group.conditions():
            for k, start in enumerate(starts):
                md = maker.make(model, start, temperature, pressure, group, seed=seed + len(jobs))
                md.name = f"{name_prefix} g{g} T{temperature:g}" + ("" if pressure is None else f" P{pressure:g}") + f" #{k}"
                md.update_metadata({"structure_index": k}, dynamic=False)
                jobs.append(md)
    return jobs
