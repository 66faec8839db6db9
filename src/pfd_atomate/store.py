"""JobStores for PFD runs.

The embedded default keeps everything on disk under one run folder with maggma's
``MontyStore`` (montydb, sqlite storage) for the job documents and for the ``data``
additional store that holds frames, datasets and model files. ``JSONStore`` is not used:
it merges documents by key on reopen and loses ``Response(replace=...)`` iterations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import JobStore
from maggma.stores import MontyStore

from pfd_atomate.data import Dataset, ModelFile, as_dataset, as_model_file


def embedded_store(run_dir: str | Path) -> JobStore:
    """An on-disk JobStore under ``run_dir/store`` (documents + ``data`` additional store).

    Re-opening the same ``run_dir`` sees every earlier job output, so a run can be queried
    (or resumed) later with plain MongoDB-style queries on ``store.docs_store``.
    """
    path = Path(run_dir).expanduser().resolve() / "store"
    path.mkdir(parents=True, exist_ok=True)
    docs = MontyStore("outputs", database_path=str(path), database_name="pfd", storage="sqlite")
    data = MontyStore("outputs_data", database_path=str(path), database_name="pfd", storage="sqlite")
    return JobStore(docs, additional_stores={"data": data})


def fetch_field(store: JobStore, job_uuid: str, field: str) -> Any:
    """A field of the latest output of job ``job_uuid`` (blobs loaded, replace chains followed).

    Raises
    ------
    KeyError: no output of that job, or no such field in it.
    """
    store.connect()
    try:
        output = store.get_output(job_uuid, which="last", load=True)
    except ValueError as err:
        raise KeyError(f"no output of job {job_uuid} in the store") from err
    value = output.get(field) if isinstance(output, dict) else getattr(output, field, None)
    if value is None:
        raise KeyError(f"job {job_uuid} has no stored {field!r}")
    return value


def fetch_model(store: JobStore, job_uuid: str, field: str = "model") -> ModelFile:
    """The :class:`ModelFile` a job stored under ``field`` (e.g. a training or fine-tune job)."""
    return as_model_file(fetch_field(store, job_uuid, field))


def fetch_dataset(store: JobStore, job_uuid: str, field: str = "dataset") -> Dataset:
    """The :class:`Dataset` a job stored under ``field`` (e.g. ``"test_set"`` of the fine-tune loop)."""
    return as_dataset(fetch_field(store, job_uuid, field))
