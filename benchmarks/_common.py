"""Shared helpers of the benchmark scripts: command line, environment record, JSON output, cheap labels."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick``, ``--threads`` and ``--out`` (plus script-specific options)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run of about 1-2 minutes")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch/OpenMP (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    return args


def set_threads(n: int) -> None:
    """Limit OpenMP and torch to ``n`` threads (the machine may be shared)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def environment(threads: int) -> dict[str, Any]:
    """Where and with what the benchmark ran: CPU/GPU, versions, threads, load average."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "load_average_1_5_15min": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["device"] = "cpu"
    for pkg in ("deepmd", "chgnet", "quests", "ase", "jobflow", "phonopy"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001 - a missing package is simply not recorded
            pass
    return info


def save(name: str, payload: dict[str, Any], out: Path) -> Path:
    """Write ``<out>/<name>.json`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(payload.get("environment"), dict):  # how busy the machine was when the run ended
        payload["environment"]["load_average_end"] = list(os.getloadavg())
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    print(f"wrote {path}")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def pyplot():
    """matplotlib.pyplot with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay out ``fig`` (within ``rect`` if given), write it to ``path`` at 120 dpi, close it, say so."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def distillation_sets(store, label_uuid: str, split_uuid: str):
    """The student's training and held-out teacher frames of a finished distillation: the teacher label job's
    dataset at the split job's ``train_indices`` / ``test_indices`` (each dataset is stored once)."""
    from pfd_atomate.store import fetch_dataset, fetch_field

    frames = fetch_dataset(store, label_uuid)
    return tuple(frames.subset(fetch_field(store, split_uuid, f"{part}_indices"), name=f"teacher-{part}")
                 for part in ("train", "test"))


def distill_uuids(store, *steps: str) -> list[str]:
    """The uuids of the distillation jobs doing ``steps`` in ``store`` (one distillation there), e.g.
    ``distill_uuids(store, "teacher label", "split")``; see :func:`pfd_atomate.queries.distill_job`.

    Raises
    ------
    LookupError: not exactly one job for a step.
    """
    from pfd_atomate.queries import distill_job

    return [distill_job(store, step) for step in steps]


def run_distillation(run_dir: Path):
    """A finished run's teacher and student models and the student's training and held-out teacher frames:
    ``(teacher ModelFile, student ModelFile, train Dataset, test Dataset)``.

    Raises
    ------
    LookupError: the run has not one report, teacher label job and split job.
    """
    from pfd_atomate.store import fetch_model
    from pfd_atomate.workflows.local import attach_run

    with attach_run(run_dir) as (store, _, _):  # beside another script reading the same run
        (report,) = store.query({"metadata.pfd_step": "report"}, properties=["output"])
        lineage = {m["role"]: m for m in report["output"]["lineage"]}
        teacher, student = (fetch_model(store, lineage[r]["location"]["job_uuid"]) for r in ("teacher", "student"))
        return (teacher, student, *distillation_sets(store, *distill_uuids(store, "teacher label", "split")))


def run_models(run_dir: Path | None, extra: Sequence[str] = (), formula: str = "Si"):
    """The models to compare on a finished run: ``(DeepMDBackend, {name: ModelFile})`` with the zero-shot DPA-4,
    the teacher (PF) and student (PFD) of the run's ``formula`` (none without ``run_dir``), then each ``extra``
    model given as ``"NAME=PATH"`` (a deepmd-kit ``.pth`` / ``.pt`` file, e.g. a student of
    ``student_variants.py --workdir``).

    Raises
    ------
    ValueError: an ``extra`` entry without ``=``.
    """
    from pfd_atomate import queries
    from pfd_atomate.data import ModelFile
    from pfd_atomate.train.deepmd import DeepMDBackend
    from pfd_atomate.workflows.local import attach_run

    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    models = {"DPA-4 zero-shot": ModelFile.from_path(backend.base_model_path(), backend="deepmd")}
    if run_dir is not None:
        with attach_run(run_dir) as (store, _, _):  # beside another script reading the same run
            models["PF (teacher)"], models["PFD (student)"] = (queries.final_model(store, formula, role)
                                                              for role in ("teacher", "student"))
    for entry in extra:
        name, sep, path = entry.partition("=")
        if not sep:
            raise ValueError(f"--model must be NAME=PATH, got {entry!r}")
        models[name] = ModelFile.from_path(path, backend="deepmd")
    return backend, models


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def emt_cu_frames(
    n_frames: int,
    seed: int,
    supercell: tuple[int, int, int] = (2, 1, 1),
    displacement: float = 0.1,
    strain: float = 0.03,
    calculator: bool = True,
    scale: float = 1.0,
):
    """Strained and rattled fcc Cu cells labelled with ASE's EMT (the benchmark's stand-in for DFT).

    Parameters
    ----------
    n_frames: frames to make.
    seed: random seed.
    supercell: repetitions of the 4-atom cubic cell ((2, 1, 1): 8 atoms).
    displacement: standard deviation of the Gaussian displacement per coordinate, Å.
    strain: half-width of the uniform symmetric strain components.
    calculator: label with EMT (energy eV, forces eV/Å, stress).
    scale: lattice constant relative to EMT's 3.59 Å (0.95: compressed by 5 %).

    Returns
    -------
    pfd_atomate Dataset.
    """
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from pfd_atomate.data import Dataset, Frame

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.59 * scale, cubic=True).repeat(supercell)
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        eps = rng.uniform(-strain, strain, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, displacement, size=atoms.positions.shape)
        if calculator:
            atoms.calc = EMT()
            atoms.get_potential_energy()
            atoms.get_forces()
            atoms.get_stress()
        frames.append(Frame.from_atoms(atoms, source=f"emt:d{displacement:g}:s{strain:g}:a{scale:g}"))
    return Dataset(frames=frames, name=f"emt-cu-{seed}")


def si_phase(phase: str):
    """8-atom cell of a silicon phase as ASE ``Atoms``, near its PBE equilibrium.

    - ``diamond``: conventional cubic cell, a = 5.43 Å;
    - ``beta-Sn``: conventional I4_1/amd cell doubled along c (a = 4.81 Å, c = 2 x 2.65 Å), atoms at
      (0,0,0), (0,½,¼) and their body-centred images;
    - ``bc8``: primitive cell of the Ia-3 (BC8) phase, a = 6.636 Å, x = 0.1003.

    Raises
    ------
    ValueError: another phase name.
    """
    from ase.build import bulk
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if phase == "diamond":
        return bulk("Si", "diamond", a=5.43, cubic=True)
    if phase == "beta-Sn":
        cell = Structure(Lattice.tetragonal(4.81, 2.65), ["Si"] * 4,
                         [[0, 0, 0], [0, 0.5, 0.25], [0.5, 0.5, 0.5], [0.5, 0, 0.75]])
        return AseAtomsAdaptor.get_atoms(cell * (1, 1, 2))
    if phase == "bc8":
        cell = Structure.from_spacegroup("Ia-3", Lattice.cubic(6.636), ["Si"], [[0.1003] * 3])
        return AseAtomsAdaptor.get_atoms(cell.get_primitive_structure())
    raise ValueError(f"phase must be one of 'diamond', 'beta-Sn', 'bc8'; got {phase!r}")


def density_kpoints(phase: str, kpoint_density: float) -> tuple[int, int, int]:
    """The mesh that ``cp2k_static_maker(kpoint_density=...)`` gives the 8-atom cell of ``phase``, and so (with
    ``LabelMaker.kpoint_references``) every perturbed frame of it in a PFD run with that labeller."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.label.kpoints import reference_kpoints

    kpoints = reference_kpoints(cp2k_static_maker(kpoint_density=kpoint_density), AseAtomsAdaptor.get_structure(si_phase(phase)))
    return tuple(int(n) for n in kpoints.kpts[0])


def si_frames(n_frames: int, seed: int, strain: float = 0.04, displacements=(0.05, 0.1, 0.15, 0.2),
              phase: str = "diamond", atoms=None):
    """Strained, rattled 8-atom Si cells of one phase (unlabelled), or of any cell given as ``atoms``.

    Parameters
    ----------
    n_frames: frames to make.
    seed: random seed.
    strain: half-width of the uniform symmetric strain components.
    displacements: Gaussian displacement σ per coordinate, Å, cycled over the frames (roughly the
        thermal displacements of 300 K to over 1000 K in diamond Si).
    phase: see :func:`si_phase`; with ``atoms``, only the name of the frames' material.
    atoms: ASE ``Atoms`` to strain and rattle instead of ``si_phase(phase)`` (e.g. 3C-SiC).

    Returns
    -------
    pfd_atomate Dataset of ``n_frames`` unlabelled frames.
    """
    from pfd_atomate.data import Dataset, Frame

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        cell = si_phase(phase) if atoms is None else atoms.copy()
        eps = rng.uniform(-strain, strain, size=(3, 3))
        cell.set_cell(cell.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        sigma = displacements[i % len(displacements)]
        cell.positions += rng.normal(0.0, sigma, size=cell.positions.shape)
        source = f"rattle:d{sigma:g}:s{strain:g}" if phase == "diamond" else f"{phase}:rattle:d{sigma:g}:s{strain:g}"
        frames.append(Frame.from_atoms(cell, source=source))
    return Dataset(frames=frames, name=f"si8-{seed}" if phase == "diamond" else f"si-{phase}-{seed}")
