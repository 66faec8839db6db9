"""Logical size of a finished run's JobStore, per PFD step: documents (BSON) and ``data`` blobs (GridFS).

Usage: ``python benchmarks/store_size.py RUN_DIR [RUN_DIR ...] [--out results/store_size.json]``

On-disk sizes of the database folder depend on the storage engine's logs and compaction; this
counts what the store holds: the BSON size of every output document and the length of every
GridFS file of the ``data`` store, attributed to the ``metadata.pfd_step`` of the job that wrote it
(``label`` includes the static jobs). Model files are counted apart (their file size beside the
stored blob size shows the base64 overhead).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import bson


def store_size(run_dir: Path) -> dict:
    """Bytes per PFD step in the run's JobStore (documents, data blobs, model files)."""
    from pfd_atomate.workflows.local import open_run_store

    docs_bytes: dict[str, int] = defaultdict(int)
    data_bytes: dict[str, int] = defaultdict(int)
    n_docs: dict[str, int] = defaultdict(int)
    model_file_bytes = model_blob_bytes = 0
    with open_run_store(run_dir) as (store, _, _):
        step_of: dict[str, str] = {}
        model_blobs: set[str] = set()
        for doc in store.docs_store._collection.find({}):
            step = (doc.get("metadata") or {}).get("pfd_step", "other")
            step_of[doc["uuid"]] = step
            docs_bytes[step] += len(bson.encode(doc))
            n_docs[step] += 1
            output = doc.get("output")
            for key in ("model", "uncompressed_model"):
                ref = output.get(key) if isinstance(output, dict) else None
                if isinstance(ref, dict) and "blob_uuid" in ref:
                    model_blobs.add(ref["blob_uuid"])
        data = store.additional_stores["data"]
        for f in data._files_collection.find({}):
            meta = f.get("metadata") or {}
            data_bytes[step_of.get(meta.get("job_uuid"), "other")] += int(f["length"])
            if meta.get("blob_uuid") in model_blobs:
                model_blob_bytes += int(f["length"])
                blob = data.query_one({"blob_uuid": meta["blob_uuid"]})
                model_file_bytes += int((blob.get("data") or blob).get("size_bytes", 0))
    steps = sorted(set(docs_bytes) | set(data_bytes))
    return {
        "run_dir": str(run_dir),
        "per_step": {s: {"documents": n_docs[s], "document_bytes": docs_bytes[s], "data_bytes": data_bytes[s]}
                     for s in steps},
        "total_document_bytes": sum(docs_bytes.values()),
        "total_data_bytes": sum(data_bytes.values()),
        "model_blob_bytes": model_blob_bytes,
        "model_file_bytes": model_file_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = [store_size(run.resolve()) for run in args.runs]
    for r in results:
        mib = 1 / 2**20
        print(f"{r['run_dir']}: documents {r['total_document_bytes'] * mib:.2f} MiB, "
              f"data {r['total_data_bytes'] * mib:.2f} MiB (models: {r['model_blob_bytes'] * mib:.2f} MiB stored for {r['model_file_bytes'] * mib:.2f} MiB of files)")
        for step, v in r["per_step"].items():
            print(f"  {step:10s} {v['documents']:5d} docs {v['document_bytes'] * mib:8.2f} MiB"
                  f"  data {v['data_bytes'] * mib:8.2f} MiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
