"""Exploration: short MD with the current model through atomate2's ``ForceFieldMDMaker``."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import units
from atomate2.forcefields.md import ForceFieldMDMaker
from jobflow import Maker, job
from pymatgen.core import Structure

from pfd_atomate.data import Dataset, Frame, ModelFile, as_model_file
from pfd_atomate.explore.schemas import ExploreOutput, TaskGroup
from pfd_atomate.train.base import TrainerBackend

logger = logging.getLogger(__name__)



def trajectory_frames(trajectory, source: str) -> tuple[list[Frame], list[float]]:
    """Frames (unlabelled) and kinetic temperatures (K) from an atomate2 ``AseResult`` trajectory.

    Handles both ASE-style trajectories (list of ``Atoms``) and pymatgen ``Trajectory``.
    """
    frames: list[Frame] = []
    temps: list[float] = []
    if hasattr(trajectory, "frame_properties") or hasattr(trajectory, "get_structure"):
        for i in range(len(trajectory)):
            structure = trajectory.get_structure(i)
            frames.append(Frame.from_structure(structure, source=source))
            props = (trajectory.frame_properties or [{}] * len(trajectory))[i] if trajectory.frame_properties else {}
            if "temperature" in props:
                temps.append(float(props["temperature"]))
    else:
        for atoms in trajectory:
            frames.append(Frame.from_atoms(atoms, source=source, with_labels=False))
            if atoms.get_velocities() is not None:
                temps.append(float(atoms.get_temperature()))
    return frames, temps


def atomate2_force_field_name(name):
    """atomate2 wants a dotted calculator path as a monty dict; MLFF names pass through."""
    if isinstance(name, str) and "." in name and not name.startswith("MLFF."):
        module, _, attr = name.rpartition(".")
        return {"@module": module, "@callable": attr}
    return name


@dataclass
class ExploreMaker(Maker):
    """Explore with MD driven by a trained model (PFD step 3).

    The MD itself is atomate2's :class:`ForceFieldMDMaker` (``md_maker``: thermostat,
    barostat and any ASE options can be set there); this Maker sets temperature, pressure,
    ensemble and length per task, and points the force field at the model file it is given
    (fetched from the JobStore, so the job runs on any worker).

    Parameters
    ----------
    name: job name.
    backend: trainer backend that knows how to build a calculator for the model.
    md_maker: template for the MD runs.
    """

    name: str = "pfd explore"
    backend: TrainerBackend = field(default=None)  # type: ignore[assignment]
    md_maker: ForceFieldMDMaker = field(
        default_factory=lambda: ForceFieldMDMaker(force_field_name="DeepMD", store_trajectory="no")
    )

    @job(output_schema=ExploreOutput, data=["frames"])
    def make(
        self,
        model: ModelFile,
        structure: Structure,
        temperature: float,
        pressure: float | None = None,
        task_group: TaskGroup | None = None,
        seed: int | None = None,
    ) -> ExploreOutput:
        """Run one MD task and return its frames.

        Parameters
        ----------
        model: model driving the MD (ModelFile, usually an OutputReference to a training job).
        structure: starting structure.
        temperature: K.
        pressure: GPa (npt only).
        task_group: MD settings (ensemble, n_steps, time step fs, trajectory interval).
        seed: seed of the Maxwell-Boltzmann initial velocities.

        Raises
        ------
        ValueError: model missing or elements unknown to the model.
        """
        model = as_model_file(model)
        if model is None:
            raise ValueError("exploration needs a model; the upstream training produced none")
        self.backend.check_elements(sorted({s.symbol for s in structure.species}), model=model)
        tg = task_group or TaskGroup(temperatures=[temperature])
        force_field_name, calc_kwargs = self.backend.force_field_spec(model)
        md_kwargs = dict(self.md_maker.ase_md_kwargs or {})
        dynamics = self.md_maker.dynamics
        if tg.ensemble == "npt" and dynamics is None:
            # atomate2's default npt dynamics (MTK chain) needs damping constants it does not set
            dynamics = "berendsen"
            md_kwargs.setdefault("taut", tg.thermostat_time * units.fs)
            md_kwargs.setdefault("taup", tg.barostat_time * units.fs)
            md_kwargs.setdefault("compressibility_au", 1.0 / (tg.bulk_modulus * units.GPa))
        elif tg.ensemble == "nvt" and dynamics is None:
            dynamics = "langevin"
            md_kwargs.setdefault("friction", 1.0 / (tg.thermostat_time * units.fs))
        md = dataclasses.replace(
            self.md_maker,
            force_field_name=atomate2_force_field_name(force_field_name),
            calculator_kwargs={**self.md_maker.calculator_kwargs, **calc_kwargs},
            calculator_meta=None,
            ensemble=tg.ensemble,
            dynamics=dynamics,
            ase_md_kwargs=md_kwargs,
            temperature=temperature,
            pressure=None if pressure is None or tg.ensemble == "nvt" else pressure * units.GPa / (1e3 * units.bar),  # GPa -> atomate2's kBar
            n_steps=tg.n_steps,
            time_step=tg.time_step,
            traj_interval=tg.traj_interval,
            mb_velocity_seed=seed,
        )
        label = f"md:{tg.ensemble}:T{temperature:g}" + ("" if pressure is None else f":P{pressure:g}")
        logger.info("exploring %s %s for %d steps", structure.composition.reduced_formula, label, tg.n_steps)
        start = time.perf_counter()
        result = md.run_ase(structure)
        wall = time.perf_counter() - start
        frames, temps = trajectory_frames(result.trajectory, source=label)
        frames = frames[1:]  # the first frame is the starting structure
        logger.info("MD %s: %d frames in %.1f s", label, len(frames), wall)
        return ExploreOutput(
            frames=Dataset(frames=frames, name=label),
            temperature=temperature,
            pressure=pressure,
            ensemble=tg.ensemble,
            n_steps=tg.n_steps,
            model_sha256=model.sha256,
            mean_temperature=float(np.mean(temps[1:])) if len(temps) > 1 else None,
            wall_time_s=wall,
            device=self.backend.compute_device,
        )


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
    structures: starting structures (expanded to ``supercell`` if given).
    task_groups: MD conditions.
    name_prefix: job names are ``"{name_prefix} g<group> T<K>[ P<GPa>] #<structure>"``.
    seed: seed of the first job's initial velocities; each further job adds one.
    """
    starts = [s * supercell if supercell else s for s in structures]
    jobs = []
    for g, group in enumerate(task_groups):
        for temperature, pressure in group.conditions():
            for k, start in enumerate(starts):
                md = maker.make(model, start, temperature, pressure, group, seed=seed + len(jobs))
                md.name = f"{name_prefix} g{g} T{temperature:g}" + ("" if pressure is None else f" P{pressure:g}") + f" #{k}"
                jobs.append(md)
    return jobs
