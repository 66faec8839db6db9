"""Training job: fine-tune a foundation model or train a student from scratch."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobflow import Maker, job

from pfd_atomate.data import Dataset, ModelFile, as_dataset, as_model_file
from pfd_atomate.data.models import is_plain_name
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.schemas import TrainOutput

logger = logging.getLogger(__name__)


@dataclass
class TrainMaker(Maker):
    """Train (or fine-tune) a model with a :class:`TrainerBackend`.

    Parameters
    ----------
    name: job name.
    backend: the trainer backend (deepmd-kit, CHGNet, ...) with its settings.
    """

    name: str = "pfd train"
    backend: TrainerBackend = field(default=None)  # type: ignore[assignment]

    @job(output_schema=TrainOutput, data=["model", "uncompressed_model"])
    def make(
        self,
        datasets: Sequence[Dataset | None],
        init_model: ModelFile | None = None,
        weights: Sequence[float] | None = None,
    ) -> TrainOutput:
        """Train on ``datasets`` (``None`` entries, e.g. from failed upstream jobs, are skipped).

        Parameters
        ----------
        datasets: labelled datasets to train on.
        init_model: model to start from (previous iteration); None = backend's base.
        weights: relative sampling weight per dataset (same length as ``datasets``).

        The training runs in :func:`training_dir`. With ``PFD_TRAIN_CHECKPOINT_DIR`` set (``pfd run`` sets it
        to the run folder's ``training/``), a job run again after its worker was lost (wall time, node failure)
        finds its folder there, and backends that keep checkpoints (deepmd-kit) continue from the last one
        (``resumed_from_step`` in the output); ``train`` in the launch folder links to it.

        Raises
        ------
        ValueError: no labelled frames.
        """
        if self.backend is None:
            raise ValueError("TrainMaker needs a backend")
        if weights is not None and len(weights) != len(datasets):
            raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
        coerced = [as_dataset(d) for d in datasets]
        pairs = [(d, w) for d, w in zip(coerced, weights or [1.0] * len(coerced)) if d is not None and len(d)]
        if not pairs:
            raise ValueError("nothing to train on: every dataset is empty")
        sets = [d for d, _ in pairs]
        init_model = as_model_file(init_model)
        n_frames = sum(len(d) for d in sets)
        logger.info("training %s on %d frames in %d datasets", self.backend.name, n_frames, len(sets))
        start = time.perf_counter()
        workdir = training_dir()
        here = Path.cwd() / "train"
        if workdir != here and not here.exists() and not here.is_symlink():
            workdir.mkdir(parents=True, exist_ok=True)
            here.symlink_to(workdir, target_is_directory=True)  # the launch folder still shows the training
        model = self.backend.train(sets, workdir, init_model=init_model, weights=[w for _, w in pairs] if weights else None)
        compressed = self.backend.compress_model(model, workdir)
        wall = time.perf_counter() - start
        logger.info("trained %s model %s in %.1f s%s", self.backend.name, model.sha256[:12], wall,
                    "" if compressed is None else f" (compressed: {compressed.sha256[:12]})")
        return TrainOutput(
            model=compressed or model,
            uncompressed_model=None if compressed is None else model,
            device=self.backend.compute_device,
            backend=self.backend.name,
            kind=model.kind,
            n_frames=n_frames,
            n_datasets=len(sets),
            init_model_sha256=None if init_model is None else init_model.sha256,
            wall_time_s=wall,
            resumed_from_step=self.backend.resumed_from_step(workdir),
            training_dir=str(workdir),
        )


def training_dir() -> Path:
    """Folder of the running training job: ``<TRAIN_CHECKPOINT_DIR>/<job uuid>_<job index>`` when that setting
    is given (:class:`~pfd_atomate.settings.PFDSettings`; the same folder for every rerun of the job, so that
    the backend continues from its last checkpoint), else ``train/`` in the job's run folder.

    Raises
    ------
    pydantic.ValidationError: ``TRAIN_CHECKPOINT_DIR`` is a relative path (it would follow each launch's run
        folder).
    ValueError: a job uuid that is not a plain folder name (``../x``).
    """
    from jobflow import CURRENT_JOB

    from pfd_atomate.settings import PFDSettings

    root = PFDSettings().TRAIN_CHECKPOINT_DIR
    if root is None or CURRENT_JOB.job is None:
        return Path.cwd() / "train"
    name = f"{CURRENT_JOB.job.uuid}_{CURRENT_JOB.job.index}"
    if not is_plain_name(name):  # the uuid comes from the job document: it must not lead out of the folder
        raise ValueError(f"job uuid/index {name!r} cannot name a training folder (letters, digits, '._+-', no '..')")
    return root / name
