"""Content-addressed label reuse: a DFT label is never paid twice.

A label is identified by its *label key*: the hash of the labeller's settings (the static
Maker as plain JSON, its job name and package versions left out) joined with the frame's
fingerprint (:meth:`pfd_atomate.data.Frame.fingerprint`: species, cell and positions to 1e-6 Å).
Each (guarded) static job carries the keys of the frames it labels in its jobflow metadata
(``metadata.pfd_label_keys``), and its output holds the atomate2 task document
(``output.task_document``), so its job document says which labels it holds.
:func:`find_labels` looks them up before a labelling fans out: every frame found is reused,
under any manager, across runs that share a store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from jobflow import JobStore, Maker

from pfd_atomate.data import Frame

#: keys of a Maker's JSON form that do not change what it computes
_IGNORED_KEYS = ("@version", "name")
#: jobflow metadata key of a static job: the label keys of its frames, in order
METADATA_KEY = "pfd_label_keys"
#: the task-document fields a label needs, as stored (see ``adapters.task_doc_fields``)
_PROPERTIES = ("uuid", "index", f"metadata.{METADATA_KEY}", "output")


def _settings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _settings(v) for k, v in sorted(obj.items()) if k not in _IGNORED_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_settings(v) for v in obj]
    return obj


def labeller_key(static_maker: Maker) -> str:
    """Stable hash (16 hex digits) of a static Maker's settings: equal settings, equal key.

    The Maker's JSON form (``as_dict``, every nested Maker and input-set generator included) with
    ``name`` and ``@version`` removed: renaming the job or upgrading a package keeps the key.
    """
    from monty.json import jsanitize

    text = json.dumps(_settings(jsanitize(static_maker.as_dict(), strict=True, enum_values=True)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def label_key(labeller: str, frame: Frame) -> str:
    """``"<labeller key>:<frame fingerprint>"``, the identity of one label."""
    return f"{labeller}:{frame.fingerprint()}"


def stored_task_documents(store: JobStore, keys: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Finished static-job outputs in ``store`` for label ``keys``.

    Returns
    -------
    ``{key: (static job uuid, task-document fields as plain data)}``; the fields are those of
    :func:`pfd_atomate.label.adapters.task_doc_fields`. A key without a finished label is absent.
    """
    from pfd_atomate.label.adapters import task_doc_fields

    wanted = set(keys)
    if not wanted or store is None:
        return {}
    store.connect()
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    docs = store.query({f"metadata.{METADATA_KEY}": {"$in": sorted(wanted)}}, properties=list(_PROPERTIES))
    for doc in docs:
        output = doc.get("output") or {}
        if "blob_uuid" in output:  # a batch job: its output is one object in the data store
            output = store.query_one({"uuid": doc["uuid"], "index": doc["index"]}, ["output"], load=True)["output"]
        output = output.get("task_document")
        if output is None:
            continue
        documents = output if isinstance(output, list) else [output]  # batch jobs return a list
        for key, document in zip(doc["metadata"][METADATA_KEY], documents):
            if key in wanted and key not in found and isinstance(document, dict):
                found[key] = (doc["uuid"], task_doc_fields(document))
    return found


def find_labels(store: JobStore, keys: Iterable[str], code: str) -> dict[str, Frame]:
    """Labelled frames already in ``store`` for label ``keys`` (see :func:`stored_task_documents`).

    Parameters
    ----------
    store: the JobStore the run writes to.
    keys: label keys (:func:`label_key`).
    code: task-document convention of the labeller (``"vasp"``, ``"cp2k"``, ``"ase"``).

    Returns
    -------
    ``{key: labelled frame}`` (source ``"reused:<static job uuid>"``); documents that give no
    usable label are skipped (the frame is labelled again).
    """
    from pfd_atomate.label.adapters import LabelError, labels_from_fields

    out: dict[str, Frame] = {}
    for key, (uuid, fields) in stored_task_documents(store, keys).items():
        try:
            structure, energy, forces, virial = labels_from_fields(fields, code)
        except LabelError:
            continue
        out[key] = Frame.from_structure(structure, energy=energy, forces=forces, virial=virial, source=f"reused:{uuid}")
    return out
