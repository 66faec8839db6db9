"""Run every benchmark one after the other (so none disturbs another's timings) and write
``results/summary.json``: the headline figure of each, read back from its own JSON.

Usage: ``python benchmarks/run_all.py [--quick] [--threads 2] [--only NAME ...] [--summary-only]``.
Full mode takes about an hour on two free cores (CP2K labels come from the committed cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["foundation_models", "inference_speed", "distillation", "data_efficiency", "selection", "overhead",
              "demo_runs"]


def headline(name: str, r: dict) -> dict:
    """The figures a reader wants first from one benchmark's JSON."""
    if name == "foundation_models":
        return {"n_labels": r["n_labels"], "budget_rule": r["budget_rule"],
                "zero_shot_force_rmse": {k: v["force_rmse"] for k, v in r["zero_shot"].items()},
                "fine_tuned_force_rmse": {k: [row["force_rmse"] for row in v] for k, v in r["fine_tuned"].items()},
                "fine_tuned_energy_rmse": {k: [row["energy_rmse"] for row in v] for k, v in r["fine_tuned"].items()},
                "device": r["environment"]["device"]}
    if name == "inference_speed":
        return {"n_atoms": r["n_atoms"], "teacher_over_student": r["teacher_over_student"],
                "failures": r["failures"], "device": r["environment"]["device"]}
    if name == "distillation":
        return {"held_out_dft_force_rmse": {k: v["force_rmse"] for k, v in r["held_out_dft"].items()},
                "held_out_dft_energy_rmse": {k: v["energy_rmse"] for k, v in r["held_out_dft"].items()},
                "student_over_teacher_force_rmse_dft": r["student_over_teacher_force_rmse_dft"],
                "teacher_over_student_time": dict(zip(map(str, r["speed"]["n_atoms"]),
                                                      r["speed"]["teacher_over_student"]))}
    if name == "data_efficiency":
        return {"labels": r.get("label_kind", "emt"), "n_labels": r["n_labels"],
                "force_rmse": {k: [row["force_rmse"] for row in v] for k, v in r["errors"].items()},
                "force_rmse_ratio_scratch_over_finetuned": r["force_rmse_ratio_scratch_over_finetuned"],
                "labels_to_reach_target": r["labels_to_reach_target"], "target_force_rmse": r["target_force_rmse"]}
    if name == "selection":
        return {**r["summary"], "selection_cost": r.get("selection_cost")}
    if name == "overhead":
        return {"overhead_share": r["overhead_share"], "orchestration_share": r["orchestration_share"],
                "wall_s": r["wall_s"]}
    if name == "demo_runs":
        kill = r["kill_resume"]
        return {"mode": r["mode"], "speedup_2_over_1_workers": r.get("speedup_2_over_1_workers"),
                "wall_s": {k: r[k]["wall_s"] for k in ("workers_1", "workers_2") if k in r},
                "labels_recomputed_after_kill": kill["labels_recomputed_after_kill"],
                "wall_saved_by_resume_s": kill.get("wall_saved_by_resume_s")}
    raise KeyError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    # demo_runs runs the whole demo three times (hours in full mode): only on request
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS[:-1])
    parser.add_argument("--summary-only", action="store_true", help="only collect the existing JSON files")
    args = parser.parse_args()
    out = HERE / "results" / ("quick" if args.quick else "")
    walls = {}
    if not args.summary_only:
        for name in args.only:
            cmd = [sys.executable, str(HERE / f"{name}.py"), "--threads", str(args.threads), "--out", str(out)]
            cmd += ["--quick"] if args.quick else []
            print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=HERE, check=False)
            walls[name] = time.perf_counter() - start
            if proc.returncode:
                print(f"=== {name} FAILED (exit code {proc.returncode})", flush=True)
    summary = {"mode": "quick" if args.quick else "full", "wall_s": walls, "results": {}}
    for name in BENCHMARKS:
        path = out / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            summary["results"][name] = {"date": data.get("environment", {}).get("date"), **headline(name, data)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
