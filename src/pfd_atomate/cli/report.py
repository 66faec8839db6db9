"""``pfd report``: a finished run's numbers as ``report.json`` and its pictures.

- ``report.json``: the run's :class:`~pfd_atomate.schemas.PFDOutput` (labels spent and reused,
  iterations with their RMSEs, model lineage) and the teacher's (PF) and the student's (PFD)
  energy and force RMSE on held-out DFT frames: the run's last iteration set (never trained on),
  or an independent labelled set given as a file;
- ``parity.png``: teacher and student against DFT on those frames;
- ``iterations.png``: energy and force RMSE of M_i on D_i per iteration;
- ``labels.png``: DFT labels per iteration (paid and reused).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from pfd_atomate import queries
from pfd_atomate.data import Dataset
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.store import fetch_dataset, fetch_model
from pfd_atomate.validation.figures import pyplot, save_figure
from pfd_atomate.validation.parity import parity_plot


def backend_for(name: str):
    """A backend that can run a stored model of backend ``name`` (inference only)."""
    from pfd_atomate.train.chgnet import CHGNetBackend
    from pfd_atomate.train.deepmd import DeepMDBackend

    backends = {"deepmd": DeepMDBackend, "chgnet": CHGNetBackend}
    if name not in backends:
        raise ValueError(f"no backend {name!r}; known: {sorted(backends)}")
    return backends[name](n_threads=1)


def read_dataset(path: str | Path) -> Dataset:
    """A labelled dataset from a JSON file (``.json`` or ``.json.gz``; a Dataset, or ``{"dataset": ...}``)."""
    raw = Path(path).read_bytes()
    data = json.loads(gzip.decompress(raw) if str(path).endswith(".gz") else raw)
    return Dataset.model_validate(data.get("dataset", data))


def plot_iterations(report: dict[str, Any], path: Path) -> Path:
    """Energy and force RMSE of M_i on D_i, and the labels of each iteration (paid, reused)."""
    plt = pyplot()
    its = report["iterations"]
    x = [it["iteration"] for it in its]
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4))
    ax_e.plot(x, [1000 * (it["energy_rmse"] or 0) for it in its], "o-")
    ax_f.plot(x, [1000 * (it["force_rmse"] or 0) for it in its], "o-")
    for ax, what in ((ax_e, "energy RMSE of M_i on D_i (meV/atom)"), (ax_f, "force RMSE of M_i on D_i (meV/Å)")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(what)
        for it in its:
            if it["converged"]:
                ax.axvline(it["iteration"], color="0.8", lw=0.8, ls=":")
    fig.suptitle(f"{report['formula']}: {report['n_iterations']} iterations (dotted: a stage converged)")
    return save_figure(fig, path)


def plot_labels(report: dict[str, Any], path: Path) -> Path:
    """DFT labels per step of the run: initial set and each iteration, paid and reused."""
    plt = pyplot()
    its = report["iterations"]
    names = ["initial"] + [f"s{it['stage']} i{it['iteration']}" for it in its]
    reused = [0] + [it.get("n_reused", 0) for it in its]
    labelled = [report["n_initial_labels"]] + [it["n_labelled"] for it in its]
    reused[0] = max(0, report.get("n_reused_labels", 0) - sum(reused))
    paid = [n - r for n, r in zip(labelled, reused)]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names) + 2), 3.8))
    ax.bar(names, paid, label="paid (computed by this run)")
    ax.bar(names, reused, bottom=paid, label="reused from the store")
    ax.set_ylabel("DFT labels")
    ax.legend(fontsize=8)
    ax.set_title(f"{report['n_dft_labels']} labels, {report.get('n_paid_labels', report['n_dft_labels'])} paid")
    return save_figure(fig, path)


def evaluate_models(store, report: dict[str, Any], held_out: Dataset) -> tuple[dict[str, Any], dict[str, Dataset]]:
    """Teacher (PF) and student (PFD) on ``held_out``: metrics and predictions per model."""
    metrics, predictions = {}, {}
    for entry in report["lineage"]:
        if entry["role"] not in ("teacher", "student") or not entry.get("location"):
            continue
        model = fetch_model(store, entry["location"]["job_uuid"], entry["location"]["field"])
        name = {"teacher": "PF (fine-tuned teacher)", "student": "PFD (distilled student)"}[entry["role"]]
        predictions[name] = backend_for(model.backend).predict(model, held_out)
        err = frame_errors(held_out, predictions[name])
        metrics[entry["role"]] = {"model": name, "backend": model.backend, "sha256": model.sha256,
                                  "n_frames": err.n_frames, "energy_rmse_ev_per_atom": err.energy_rmse,
                                  "force_rmse_ev_per_a": err.force_rmse}
    return metrics, predictions


def write_report(store, flow_uuid: str, out_dir: Path, held_out_file: Path | None = None) -> Path:
    """Write ``report.json`` and the plots of run ``flow_uuid`` into ``out_dir``; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = queries.run_report(store, flow_uuid)
    if held_out_file is not None:
        held_out, source = read_dataset(held_out_file), f"independent: {held_out_file}"
    else:
        where = report["datasets"]["held_out_dft"]
        held_out = fetch_dataset(store, where["job_uuid"], where["field"])
        source = "the run's last iteration set, never trained on"
    metrics, predictions = evaluate_models(store, report, held_out)
    plots = [parity_plot(held_out, predictions, out_dir / "parity.png",
                         title=f"{report['formula']}: {len(held_out)} held-out DFT frames").name,
             plot_iterations(report, out_dir / "iterations.png").name,
             plot_labels(report, out_dir / "labels.png").name]
    summary = {"run": flow_uuid, "formula": report["formula"], "dft_labels": report["n_dft_labels"],
               "dft_labels_paid": report.get("n_paid_labels"), "dft_labels_reused": report.get("n_reused_labels"),
               "iterations": report["n_iterations"], "converged": report["converged"],
               "held_out": {"frames": len(held_out), "source": source, **metrics}, "plots": plots,
               "report": report}
    path = out_dir / "report.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
