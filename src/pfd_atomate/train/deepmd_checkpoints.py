"""Continue an interrupted deepmd-kit training from its last checkpoint.

A training killed by a walltime limit, a node failure or a lost worker leaves its checkpoints
(``model.ckpt-<step>.pt``, every ``save_freq`` steps) in its work folder. When the same training
is started again in that folder, :class:`~pfd_atomate.train.deepmd.DeepMDBackend` continues from
the newest one (``dp --pt train --restart``) instead of step 0, but only when its inputs are
byte-for-byte those the checkpoints were trained on: the ``input.json``, every file of the
deepmd/npy data and the starting model (sha256 and head), summed up in one fingerprint kept beside
them (:data:`FINGERPRINT_NAME`). Any other inputs start over and the old checkpoints are removed,
so that a stale checkpoint can never become the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

#: file in the work folder holding the fingerprint of the inputs its checkpoints were trained on
FINGERPRINT_NAME = "training_inputs.sha256"
#: what the last training in the folder did: ``{"resumed_from_step": int | None, "numb_steps": int}``
RESUME_RECORD_NAME = "resume.json"
_CHECKPOINT = re.compile(r"^model\.ckpt-(\d+)\.pt$")
#: deepmd-kit's own files of a training run (its checkpoints, their pointer and the learning curve)
_RUN_FILES = ("model.ckpt.pt", "checkpoint", "lcurve.out")


def training_fingerprint(workdir: str | Path, parent_sha256: str | None, head: str | None) -> str:
    """sha256 of what a deepmd training in ``workdir`` learns from.

    Parameters
    ----------
    workdir: the work folder, holding ``input.json`` and the ``data/`` systems.
    parent_sha256, head: the starting model's digest and model branch (``None`` from scratch).

    Returns
    -------
    Hex digest over ``input.json``, every file under ``data/`` (relative path and bytes, sorted by
    path), ``parent_sha256`` and ``head``.

    Raises
    ------
    FileNotFoundError: no ``input.json`` in ``workdir``.
    """
    workdir = Path(workdir)
    digest = hashlib.sha256()
    digest.update((workdir / "input.json").read_bytes())
    data = workdir / "data"
    for path in sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else []:
        digest.update(str(path.relative_to(workdir)).encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps([parent_sha256, head]).encode())
    return digest.hexdigest()


def stored_fingerprint(workdir: str | Path) -> str | None:
    """The fingerprint an earlier training left in ``workdir`` (``None``: none there)."""
    path = Path(workdir) / FINGERPRINT_NAME
    return path.read_text().strip() if path.is_file() else None


def store_fingerprint(workdir: str | Path, fingerprint: str) -> None:
    """Keep ``fingerprint`` beside the checkpoints it describes."""
    (Path(workdir) / FINGERPRINT_NAME).write_text(fingerprint + "\n")


def latest_checkpoint(workdir: str | Path) -> tuple[Path, int] | None:
    """The newest checkpoint in ``workdir`` that loads, and the step it was written at.

    deepmd-kit writes ``model.ckpt-<step>.pt`` and then points ``model.ckpt.pt`` at it, so a kill
    can leave a truncated newest file or a dangling pointer: the files are tried newest first,
    each loaded once with ``torch.load(weights_only=True)``.

    Returns
    -------
    (path, step), or ``None`` when no checkpoint loads.
    """
    import torch

    found = []
    for path in Path(workdir).glob("model.ckpt-*.pt"):
        if match := _CHECKPOINT.match(path.name):
            found.append((int(match.group(1)), path))
    for step, path in sorted(found, reverse=True):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001  (truncated by a kill: any unpickling error)
            logger.warning("checkpoint %s does not load (%s); trying an older one", path.name, error)
            continue
        return path, step
    return None


def clear_checkpoints(workdir: str | Path) -> None:
    """Remove the checkpoints, their pointer and the learning curve of an earlier training in ``workdir``."""
    workdir = Path(workdir)
    for path in [*workdir.glob("model.ckpt-*.pt"), *(workdir / name for name in _RUN_FILES)]:
        if path.is_symlink() or path.is_file():
            path.unlink()


def record_resume(workdir: str | Path, resumed_from_step: int | None, numb_steps: int) -> None:
    """Note where the training in ``workdir`` started (``None``: step 0) out of ``numb_steps``."""
    record = {"resumed_from_step": resumed_from_step, "numb_steps": numb_steps}
    (Path(workdir) / RESUME_RECORD_NAME).write_text(json.dumps(record))


def resumed_from_step(workdir: str | Path) -> int | None:
    """The step the last training in ``workdir`` continued from (``None``: it started at step 0 or never ran)."""
    path = Path(workdir) / RESUME_RECORD_NAME
    return json.loads(path.read_text())["resumed_from_step"] if path.is_file() else None
