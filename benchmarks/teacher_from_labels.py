"""Rebuild a run's teacher (PF model) from its exported DFT labels, without paying for a label again.

Run folders do not survive between sessions, and model weights never go into the repository; a run's DFT
labels do (``multi_phase.py`` writes them to ``benchmarks/data/``). Fine-tuning the foundation model with the
run's settings (``multi_phase.py``'s teacher: ``presets.dpa4_teacher`` with the demo's 400 steps, its fixed seed)
on the frames the run's teacher was trained on gives that teacher again: ``--sources perturb`` takes the initial labels (sources ``perturb:<i>``),
which is the whole training set when every stage converged at its first iteration. ``--set`` changes a
``DeepMDBackend`` field of those settings (e.g. ``--set seed=2 numb_steps=800``): the same labels, another
fine-tune (``numb_steps=800``: the library's default since 2026-12-03, ``presets.DPA4_MIN_STEPS``).

Usage: ``.venv/bin/python benchmarks/teacher_from_labels.py --labels data/<file>.json.gz --out DIR
[--sources perturb md] [--md-frames I ...] [--set FIELD=VALUE ...]`` prints the model's path (``DIR/teacher.pt``,
reused when it exists) and writes ``DIR/teacher.json`` (frames, settings, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _common import set_threads

HERE = Path(__file__).resolve().parent


def training_frames(labels: Path, sources: list[str], md_frames: list[int] | None = None):
    """The labelled frames of ``labels`` (a cached-label file) whose source starts with one of ``sources``
    (``"perturb"``: initial labels; ``"md"``: labels of the loop's exploration), in file order; with ``md_frames``
    only those ``md`` frames, counted from 0 in file order (the file keeps the run's order, D_0 first: ``0 1 2 3``
    are the frames that the demo's settings add for M_1).

    Raises
    ------
    ValueError: no frame matches, or an ``md_frames`` index beyond the file's md labels.
    """
    from _dft_labels import read_cached_dataset

    _, stored, _ = read_cached_dataset(labels)
    keep = [i for i, f in enumerate(stored.frames) if f.source.split(":", 1)[0] in sources]
    if md_frames is not None:
        md = [i for i in keep if stored.frames[i].source.startswith("md:")]
        if bad := [k for k in md_frames if not 0 <= k < len(md)]:
            raise ValueError(f"--md-frames {bad}: {labels.name} has md labels 0-{len(md) - 1} (with --sources md)")
        dropped = set(md) - {md[k] for k in md_frames}
        keep = [i for i in keep if i not in dropped]
    if not keep:
        raise ValueError(f"--sources {sources}: no frame of {labels} has such a source")
    return stored.subset(keep, name=f"{labels.name}:{'+'.join(sources)}")


def fine_tune(frames, out: Path, overrides: dict, record: dict) -> tuple[Path, dict]:
    """Fine-tune the multi-phase run's teacher settings (``multi_phase.py``'s ``presets.dpa4_teacher``, one thread)
    with ``overrides`` (``DeepMDBackend`` fields) on ``frames``; write ``out/teacher.pt`` (or ``.pth``: deepmd-kit reads
    a frozen model by its suffix) and ``out/teacher.json`` (``record`` with the model's file name, frame count,
    backend, training seconds and sha256). Returns the model's path and that record."""
    from multi_phase import multi_phase_maker

    backend = dataclasses.replace(multi_phase_maker(distill=False).finetune.trainer, **({"n_threads": 1} | overrides))
    start = time.perf_counter()
    model = backend.train([frames], out / "work")
    seconds = time.perf_counter() - start
    model_path = out / f"teacher{Path(model.filename).suffix}"
    model_path.write_bytes(Path(model.materialize(out / "work" / "model")).read_bytes())
    record = record | {"model": model_path.name, "n_frames": len(frames), "backend": dataclasses.asdict(backend),
                       "train_seconds": seconds, "sha256": model.sha256}
    (out / "teacher.json").write_text(json.dumps(record, indent=1))
    return model_path, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True, help="a cached-label file (relative to benchmarks/)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the rebuilt teacher")
    parser.add_argument("--sources", nargs="+", default=["perturb"], choices=["perturb", "md"])
    parser.add_argument("--md-frames", type=int, nargs="+", default=None,
                        help="only these md labels, counted from 0 in file order (D_0 first)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="DeepMDBackend fields changed from presets.dpa4_teacher (VALUE read as JSON)")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected FIELD=VALUE")
        overrides[key] = json.loads(value)
    set_threads(1)

    labels = args.labels if args.labels.is_absolute() else HERE / args.labels
    done = sorted(args.out.glob("teacher.p*"))
    if done:
        print(done[0])
        return
    frames = training_frames(labels, args.sources, args.md_frames)
    model_path, _ = fine_tune(frames, args.out, overrides, {"labels": str(args.labels), "sources": args.sources,
                                                            "md_frames": args.md_frames, "overrides": overrides})
    print(model_path)

if __name__ == "__main__":
    main()
