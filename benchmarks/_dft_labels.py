"""Real DFT labels for the benchmarks: 8-atom diamond Si frames labelled by CP2K (PBE) through
pfd-atomate's own labelling flow (``LabelMaker`` + atomate2's CP2K ``StaticMaker``), cached on disk.

Labelling 200 frames takes tens of minutes on two cores, so the labelled dataset is written to
``benchmarks/data/`` (gzipped JSON, committed) together with the settings that made it; a later run
with the same settings reuses it, a run with other settings (or ``--relabel``) labels afresh. A set
still being labelled keeps its frames and every finished label in ``data/partial/`` (committed with the
session's work), so labelling goes on where it stopped, also on a later session's new machine.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import queue as queue_module
import shutil
from pathlib import Path

from _common import si_frames

DATA = Path(__file__).resolve().parent / "data"
#: a set being labelled: its drawn frames and every label finished so far. Committed at the end of a session
#: (the machine, ``label_workdir()`` with it, does not outlive the session), so the next session goes on from
#: there instead of paying for those labels again; emptied of a set when it is complete.
PARTIAL = DATA / "partial"


def read_cached_dataset(path: Path):
    """``(settings, Dataset, meta)`` of a file written by :func:`write_cached_dataset`."""
    from pfd_atomate.data import Dataset

    stored = json.loads(gzip.decompress(path.read_bytes()))
    return stored["settings"], Dataset.model_validate(stored["dataset"]), stored["meta"]


def cached_dataset(path: Path, settings: dict, relabel: bool = False):
    """``(Dataset, meta)`` stored at ``path`` (gzipped JSON) when it was made with ``settings``, else None."""
    if path.exists() and not relabel:
        stored_settings, dataset, meta = read_cached_dataset(path)
        if stored_settings == settings:
            return dataset, meta
    return None


def kept_frames(name: str, make, relabel: bool = False):
    """``(frames, seconds)``: the unlabelled frames of the set ``name`` (the stem of its file in ``data/``)
    kept in :data:`PARTIAL` (0 s), else ``make()`` (which returns them and the seconds it took), kept there,
    so a rerun after a failed or unfinished labelling, in this session or a later one, labels the very same
    frames and reuses every finished label (MD frames are not drawn alike twice)."""
    from pfd_atomate.data import Dataset

    frames_file = PARTIAL / f"{name}-frames.json.gz"
    if frames_file.exists() and not relabel:
        return Dataset.model_validate_json(gzip.decompress(frames_file.read_bytes())), 0.0
    frames, seconds = make()
    frames_file.parent.mkdir(parents=True, exist_ok=True)
    frames_file.write_bytes(gzip.compress(frames.model_dump_json().encode()))
    return frames, seconds


def label_workdir() -> Path:
    """Scratch folder of the benchmarks' labelling runs (``$PFD_BENCH_LABELS``): CP2K job folders and embedded
    stores (the labels themselves are kept in :data:`PARTIAL`)."""
    return Path(os.environ.get("PFD_BENCH_LABELS", Path.home() / ".cache" / "pfd_atomate" / "bench-labels"))


def die_with_parent_group() -> None:
    """Call first in a benchmark's child process: when the parent dies (killed by pid, a scheduler's signal),
    this child and everything it started (CP2K under custodian) are killed, instead of labelling on unseen.

    The child leads a process group of its own; the parent's death sends it SIGTERM
    (``pfd_atomate.process.die_with_parent``), whose handler kills the whole group."""
    import signal

    from pfd_atomate.process import die_with_parent

    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    arm = die_with_parent(signal.SIGTERM)
    if arm is not None:
        arm()
    if os.getppid() == 1:  # the parent died before the hook was armed
        os.killpg(0, signal.SIGKILL)


def _label_worker(k: int, frames_json: str, kpoints: tuple[int, int, int], workdir: str, tasks, queue,
                  static_kwargs: dict | None = None) -> None:
    """Child process: label frames of ``frames_json`` one at a time, each index taken from ``tasks`` (None: stop),
    with CP2K through LabelMaker + run_locally (one OpenMP thread); each label is put on ``queue`` as soon as
    it is finished (``("label", index, frame JSON)``, ``("failed", index, message)``, then ``("done", k, None)``).
    ``static_kwargs``: more ``cp2k_static_maker`` arguments (basis sets, cutoff)."""
    die_with_parent_group()
    os.environ["OMP_NUM_THREADS"] = "1"
    from jobflow import run_locally

    from pfd_atomate.data import Dataset
    from pfd_atomate.label.cp2k import cp2k_static_maker
    from pfd_atomate.label.flows import LabelMaker
    from pfd_atomate.store import embedded_store, fetch_dataset

    frames = Dataset.model_validate_json(frames_json)
    maker = LabelMaker(static_maker=cp2k_static_maker(kpoints=kpoints, **(static_kwargs or {})))
    store = embedded_store(workdir)
    while (index := tasks.get()) is not None:
        try:
            flow = maker.make(frames.subset([index], name=f"{frames.name}-{index}"))
            run_locally(flow, store=store, root_dir=Path(workdir) / "jobs", create_folders=True,
                        ensure_success=True, log=False)
            store.connect()
            (frame,) = fetch_dataset(store, flow.output.uuid).frames
            queue.put(("label", index, frame.model_dump_json()))
        except Exception as err:  # noqa: BLE001 - the parent counts failures against min_success_ratio
            queue.put(("failed", index, f"{type(err).__name__}: {err}"))
    queue.put(("done", k, None))


def read_kept_labels(keep: Path) -> dict:
    """``{input frame fingerprint: labelled Frame}`` of a kept-labels file (:func:`label_with_cp2k`), else {}."""
    from pfd_atomate.data import Frame

    if not keep.exists():
        return {}
    stored = json.loads(gzip.decompress(keep.read_bytes()))
    return {key: Frame.model_validate(frame) for key, frame in stored["labels"].items()}


def _write_kept_labels(keep: Path, labels: dict) -> None:
    keep.parent.mkdir(parents=True, exist_ok=True)
    part = keep.with_name(keep.name + ".part")  # a kill mid-write leaves the last complete file
    part.write_bytes(gzip.compress(json.dumps(
        {"labels": {key: json.loads(frame.model_dump_json()) for key, frame in labels.items()}}).encode()))
    part.replace(keep)


def label_with_cp2k(frames, kpoints: tuple[int, int, int], n_procs: int = 2, static_kwargs: dict | None = None,
                    keep: Path | None = None, min_success_ratio: float = 0.9):
    """Label ``frames`` with CP2K (PBE, the ``cp2k_static_maker`` preset) in ``n_procs`` parallel
    single-threaded processes, one frame at a time each. ``static_kwargs``: further ``cp2k_static_maker``
    arguments (e.g. ``basis_and_potential`` and ``cutoff`` for elements other than Si); default: the Si preset.

    ``keep``: a file (gzipped JSON, under :data:`PARTIAL` when the set is cached in ``data/``) that every
    finished label is written to at once, keyed by its input frame's fingerprint, and read back first: a
    frame labelled by an earlier run, killed or ended with the session's machine, is not paid for again.

    Returns
    -------
    (Dataset of the labelled frames in input order, list of their input indices)

    Raises
    ------
    RuntimeError: CP2K is not installed, a labelling process died, or fewer than ``min_success_ratio`` of
        the frames were labelled (the finished labels stay in ``keep``).
    """
    from pfd_atomate.data import Dataset, Frame

    kept = read_kept_labels(keep) if keep is not None else {}
    keys = [f.fingerprint() for f in frames]
    todo = [i for i, key in enumerate(keys) if key not in kept]
    if todo and shutil.which("cp2k.psmp") is None and shutil.which("cp2k") is None:
        raise RuntimeError("CP2K is not installed: run `bash scripts/setup_env.sh`")
    if kept and todo:
        print(f"{len(frames) - len(todo)} of {len(frames)} labels of {frames.name} kept from an earlier run "
              f"({keep.name}); labelling {len(todo)}", flush=True)
    failed: dict[int, str] = {}
    n_workers = min(n_procs, len(todo))
    if n_workers:
        ctx = mp.get_context("spawn")
        tasks, queue = ctx.Queue(), ctx.Queue()
        for i in [*todo, *[None] * n_workers]:
            tasks.put(i)
        # the CP2K job folders and embedded stores of this set (scratch: the labels themselves are in ``keep``)
        tmp = label_workdir() / f"{frames.name}-{len(frames)}-k{''.join(map(str, kpoints))}"
        procs = [ctx.Process(target=_label_worker, args=(k, frames.model_dump_json(), kpoints,
                                                          f"{tmp}/worker{k}", tasks, queue, static_kwargs))
                 for k in range(n_workers)]
        for proc in procs:
            proc.start()
        done = 0
        while done < n_workers:  # read before join: a full queue would block the child
            try:
                kind, i, payload = queue.get(timeout=5)
            except queue_module.Empty:  # nothing yet: check that no child died without a word
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode == 0 for p in procs) and queue.empty():
                    raise RuntimeError(f"a CP2K labelling process ended without a result (exit codes {dead})")
                continue
            if kind == "done":
                done += 1
            elif kind == "failed":
                failed[i] = payload
            else:
                kept[keys[i]] = Frame.model_validate_json(payload)
                if keep is not None:
                    _write_kept_labels(keep, kept)
        for proc in procs:
            proc.join()
    order = [i for i, key in enumerate(keys) if key in kept]
    if len(order) < min_success_ratio * len(frames):
        raise RuntimeError(f"CP2K labelled {len(order)} of {len(frames)} frames of {frames.name} (at least "
                           f"{min_success_ratio:.0%} needed): " + "; ".join(f"{i}: {m}" for i, m in failed.items()))
    return Dataset(frames=[kept[keys[i]] for i in order], name=frames.name), order


def label_and_cache(frames, path: Path, settings: dict, kpoints: tuple[int, int, int], n_procs: int = 2,
                    static_kwargs: dict | None = None, **meta):
    """Label ``frames`` with CP2K (:func:`label_with_cp2k`) and write them to ``path`` with ``settings``, the form
    :func:`cached_dataset` reads back; (labelled Dataset in input order, meta: frame counts, input indices,
    CP2K wall time and the given ``meta``). Every label is kept in :data:`PARTIAL` as it finishes; the partial
    files of the set (its labels and :func:`kept_frames`' frames, both named after ``path``) go when it is complete.
    ``cp2k_wall_s`` is this call's: labels kept from an earlier run are not in it."""
    import time

    stem = path.name.removesuffix(".json.gz")
    keep = PARTIAL / f"{stem}-labels.json.gz"
    start = time.perf_counter()
    labelled, order = label_with_cp2k(frames, kpoints, n_procs=n_procs, static_kwargs=static_kwargs, keep=keep)
    meta = {"n_frames": len(frames), "n_labelled": len(labelled), "input_indices": order, **meta,
            "cp2k_wall_s": time.perf_counter() - start}
    write_cached_dataset(path, settings, meta, labelled)
    for done in (keep, PARTIAL / f"{stem}-frames.json.gz"):  # the set is complete: its partial files go
        done.unlink(missing_ok=True)
    return labelled, meta


def write_cached_dataset(path: Path, settings: dict, meta: dict, dataset) -> None:
    """Write ``dataset`` with the ``settings`` that made it (gzipped JSON), the form :func:`cached_dataset` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"settings": settings, "meta": meta,
                                                "dataset": json.loads(dataset.model_dump_json())}).encode()))


def cached_si_labels(n_frames: int, seed: int, kpoints: tuple[int, int, int], relabel: bool = False,
                     n_procs: int = 2):
    """CP2K-labelled Si8 frames from :func:`si_frames`, from the cache in ``benchmarks/data`` when it was
    made with the same settings, else labelled now (and cached).

    Returns
    -------
    (Dataset, metadata dict: settings, frames labelled, CP2K wall time, whether it came from the cache)
    """
    import time

    settings = {"system": "diamond Si, 8-atom cubic cell", "n_frames": n_frames, "seed": seed,
                "kpoints": list(kpoints), "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker",
                "frames": "si_frames(strain 0.04, displacements 0.05-0.2 Å)"}
    path = DATA / f"si8_cp2k_k{''.join(map(str, kpoints))}_n{n_frames}_s{seed}.json.gz"
    if (cached := cached_dataset(path, settings, relabel)) is not None:
        return cached[0], {**cached[1], "from_cache": str(path.name)}
    start = time.perf_counter()
    dataset, order = label_with_cp2k(si_frames(n_frames, seed), kpoints, n_procs=n_procs)
    meta = {"settings": settings, "n_labelled": len(dataset), "input_indices": order,
            "cp2k_wall_s": time.perf_counter() - start, "n_procs": n_procs}
    write_cached_dataset(path, settings, meta, dataset)
    return dataset, {**meta, "from_cache": None}


def si_pool_and_held_out(relabel: bool = False, n_pool: int = 160):
    """The benchmarks' CP2K Si8 data: 200 labelled frames (seed 11, 3x3x3 k-points), passed through
    pfd-atomate's default non-physical-frame filter (``FrameFilter()``: no pair closer than 0.6 x the
    covalent radii sum, as the PFD loop does before labelling), then split into a training pool (the
    first ``n_pool`` frames) and a held-out set (the rest: 39 frames).

    The filter matters: the one frame it drops (a 1.28 Å pair, RMS force 24 eV/Å) made every
    DeePMD training that saw it diverge (energy errors of 2-4 eV/atom even on its training frames).

    Returns
    -------
    (pool Dataset, held-out Dataset, metadata: labelling settings and what the filter dropped)

    Raises
    ------
    RuntimeError: fewer than 190 of the 200 frames were labelled.
    """
    from pfd_atomate.select.filters import FrameFilter

    data, meta = cached_si_labels(200, seed=11, kpoints=(3, 3, 3), relabel=relabel)
    if len(data) < 190:
        raise RuntimeError(f"only {len(data)} of 200 CP2K labels succeeded")
    kept, rejected = FrameFilter().apply(data)
    meta = {k: v for k, v in meta.items() if k != "input_indices"} | {"n_after_filter": len(kept),
                                                                      "filter_rejected": rejected}
    return (kept.subset(range(n_pool), name="si8-cp2k-pool"),
            kept.subset(range(n_pool, len(kept)), name="si8-cp2k-held-out"), meta)
