"""Inputs given by value, put into the JobStore once so that every later job references them.

A Maker that receives a model file or a dataset by value (``ModelFile.from_path(...)``, a
``Dataset`` read from disk) and hands it to many jobs would copy its bytes into each job's
inputs: a 4.6 MB teacher model into every teacher-MD job of a distillation (6.1 MB of
FireWorks spec each, 67 MB for the default 18-job flow). Staging it writes the bytes once, to
the JobStore's ``data`` store (GridFS on MongoDB), and the jobs carry an ``OutputReference``.
"""

from __future__ import annotations

from typing import Any

from jobflow import Job, OutputReference, job

from pfd_atomate.data.frames import Dataset, as_dataset
from pfd_atomate.data.models import ModelFile, as_model_file


@job(data=True)
def stage_dataset(dataset: Dataset) -> Dataset:
    """A dataset given by value, stored (whole, in the ``data`` store) so later jobs can reference it."""
    return as_dataset(dataset)


@job(data=True)
def stage_model(model: ModelFile) -> ModelFile:
    """A model file given by value, stored (whole, in the ``data`` store) so later jobs can reference it."""
    return as_model_file(model)


def staged(value: Any, name: str) -> tuple[list[Job], Any]:
    """``value`` as something later jobs can reference without copying it.

    Parameters
    ----------
    value: a :class:`ModelFile` or :class:`Dataset` (or their serialized dicts), an
        ``OutputReference``, or None.
    name: name of the staging job, if one is made.

    Returns
    -------
    ``([], value)`` for an ``OutputReference`` or None (already stored, or nothing to store);
    else ``([stage job], stage_job.output)``: add the job to the Flow and pass on its output.

    Raises
    ------
    TypeError: ``value`` is neither a model file nor a dataset.
    """
    if value is None or isinstance(value, OutputReference):
        return [], value
    if isinstance(value, ModelFile) or (isinstance(value, dict) and "content_b64" in value):
        stage = stage_model(value)
    elif isinstance(value, Dataset) or (isinstance(value, dict) and "frames" in value):
        stage = stage_dataset(value)
    else:
        raise TypeError(f"{name}: expected a ModelFile, a Dataset or an OutputReference, got {type(value).__name__}")
    stage.name = name
    return [stage], stage.output
