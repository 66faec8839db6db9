"""JobStores for PFD runs.

The embedded default keeps everything on disk under one run folder with maggma's
``MontyStore`` (montydb, sqlite storage) for the job documents and for the ``data``
additional store that holds frames, datasets and model files. ``JSONStore`` is not used:
it merges documents by key on reopen and loses ``Response(replace=...)`` iterations.
"""

from __future__ import annotations

from pathlib import Path

from jobflow import JobStore
from maggma.stores import MontyStore

from pfd_atomate.data import ModelFile


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


def fetch_model(store: JobStore, job_uuid: str, field: str = "model") -> ModelFile:
    """Load the :class:`ModelFile` a job stored under ``field`` (latest run of that job).

    Raises
    ------
    KeyError: no output of that job, or no such field in it.
    """
    store.connect()
    output = store.get_output(job_uuid, which="last", load=True)
    if not isinstance(output, dict) or field not in output or output[field] is None:
        raise KeyError(f"job {job_uuid} has no stored {field!r}")
    return ModelFile.model_validate(output[field])
