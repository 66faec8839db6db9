"""How much of a model's error on a held-out set is the labels' own k-point error? (issue 12)

The 64-atom β-Sn MD set (``held_out_md.py --phase beta-Sn --supercell 2 2 2 --kpoints 3 3 3``) is labelled on
3x3x3, the k-point density of 6x6x6 on the 8-atom cell, where ``kpoint_convergence.py`` found β-Sn forces
0.031 eV/Å RMS from 10x10x10 on strained frames. The teacher's 0.052 eV/Å there (target 0.05) may be partly that.
This labels ``--frames`` of a cached CP2K set (``--dataset``, a file in ``data/``) again with the same labeller
on a denser mesh (``--kpoints``), and reports per frame the label change (energy meV/atom, force RMS eV/Å) and
each model's force and energy RMSE against the set's labels and against the denser ones.

Every new label is kept as it finishes (``data/partial/``), then in its own file, ``data/<stem of
--dataset>_relabel_k<mesh>_f<frame>.json.gz``: a rerun, or a run on more frames, pays for none of them again.

Usage (in ``benchmarks/``): ``../.venv/bin/python label_mesh_error.py
--dataset data/si64_beta-Sn_md_cp2k_k333_300-900K_n2_s2027.json.gz --frames 3 --kpoints 4 4 4
--model PF=../runs/teacher-k300-w100/teacher.pt`` (one CP2K process, one thread; about 70 min per 64-atom β-Sn
frame on 4x4x4); writes ``results/label_mesh_error_<tag>.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import environment, save
from _dft_labels import DATA, PARTIAL, cached_dataset, label_with_cp2k, read_cached_dataset, write_cached_dataset
from held_out_md import rmse_row

RESULTS = Path(__file__).resolve().parent / "results"


def label_change(coarse, dense) -> list[dict]:
    """Per frame: dense − coarse energy (meV/atom) and RMS force difference (eV/Å) of two labelled Datasets of
    the same frames, in the same order."""
    rows = []
    for a, b in zip(coarse, dense, strict=True):
        rows.append({"source": a.source, "energy_mev_per_atom": 1e3 * (b.energy - a.energy) / a.n_atoms,
                     "force_rms_ev_per_a": float(np.sqrt(np.mean((np.asarray(b.forces) - np.asarray(a.forces)) ** 2)))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a cached CP2K set (data/<name>.json.gz)")
    parser.add_argument("--frames", type=int, nargs="+", required=True, help="indices of the frames to relabel")
    parser.add_argument("--kpoints", type=int, nargs=3, required=True, help="the denser CP2K k-mesh")
    parser.add_argument("--model", nargs="*", default=[], metavar="NAME=FILE", help="deepmd model files to test")
    parser.add_argument("--tag", default="", help="suffix of the result file (default: the set's stem)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from pfd_atomate.data import Dataset, ModelFile
    from pfd_atomate.train.deepmd import DeepMDBackend

    settings, data, _ = read_cached_dataset(args.dataset)
    if max(args.frames) >= len(data) or min(args.frames) < 0:
        raise ValueError(f"--frames must be indices of the {len(data)} frames of {args.dataset.name}, "
                         f"got {args.frames}")
    stem = args.dataset.name.removesuffix(".json.gz")
    mesh = "".join(map(str, args.kpoints))
    coarse = data.subset(args.frames, name=f"{stem}-relabel-k{mesh}")
    labeller = settings.get("labeller", "cp2k_static_maker")
    dense, cp2k_wall_s = [], {}
    for index in args.frames:  # one file per frame: a later run on more frames reuses every one of them
        out = DATA / f"{stem}_relabel_k{mesh}_f{index}.json.gz"
        new_settings = {"from": args.dataset.name, "frames": [index], "kpoints": args.kpoints, "labeller": labeller}
        if (kept := cached_dataset(out, new_settings)) is not None:
            label, meta = kept
        else:
            start = time.perf_counter()
            keep = PARTIAL / f"{out.name.removesuffix('.json.gz')}-labels.json.gz"
            label, _ = label_with_cp2k(data.subset([index]), tuple(args.kpoints), n_procs=1, keep=keep,
                                       min_success_ratio=1.0)
            meta = {"n_frames": 1, "cp2k_wall_s": time.perf_counter() - start}
            write_cached_dataset(out, new_settings, meta, label)
            keep.unlink(missing_ok=True)
        dense.append(label)
        cp2k_wall_s[index] = meta["cp2k_wall_s"]
        print(f"frame {index} on {mesh}: {meta['cp2k_wall_s']:.0f} s of CP2K in the run that labelled it")
    dense = Dataset.concat(dense, name=f"{stem}-k{mesh}")

    backend = DeepMDBackend(base_model="dpa4-neo", n_threads=1)
    models = {"DPA-4 zero-shot": ModelFile.from_path(backend.base_model_path(), backend="deepmd")}
    models |= {name: ModelFile.from_path(Path(path).resolve(), backend="deepmd")
               for name, path in (item.split("=", 1) for item in args.model)}

    def errors(reference, predicted) -> dict:  # the offset-removed energy only where there is more than one frame
        row = rmse_row(reference, predicted)
        return row if row["n_frames"] > 1 else {k: v for k, v in row.items() if "offset" not in k}

    rmse = {}
    for name, model in models.items():
        predicted = backend.predict(model, coarse)
        rmse[name] = {"set's labels": errors(coarse, predicted), f"{mesh} labels": errors(dense, predicted)}
        print(name, {k: round(v["force_rmse_ev_per_a"], 4) for k, v in rmse[name].items()})
    changes = label_change(coarse, dense)
    for row in changes:
        print(row)
    save(f"label_mesh_error_{args.tag or stem}", {
        "benchmark": "label_mesh_error", "environment": environment(1), "device": "cpu, 1 thread",
        "dataset": args.dataset.name, "frames": args.frames, "set_settings": settings, "kpoints": args.kpoints,
        "cp2k_wall_s": cp2k_wall_s, "label_change": changes, "rmse": rmse}, RESULTS)


if __name__ == "__main__":
    main()
