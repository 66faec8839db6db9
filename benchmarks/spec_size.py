"""Size of a distillation's FireWorks specs, and the idle worker's query on them, with the teacher given by value.

A user who distills a teacher they already have passes it by value (``ModelFile.from_path``). Before
``pfd_atomate.data.staging`` every teacher-MD job and the label job carried the model's bytes in its inputs
(base64: 6.1 MB of spec for a 4.6 MB model), so the launchpad held one copy per job, and each look of an idle
FireWorks worker (``{"state": "READY", "$or": [...]}``, which the embedded server answers by reading every
firework) read them all (0.90 s per look on the 68 fireworks of ``supercell_student.py``'s finished run,
2026-12-03). This builds the multi-phase run's real ``DistillMaker`` flow (diamond, beta-Sn and
BC8, the default task groups and student, the run's initial frames) both ways, the old way by switching the
staging off, adds each workflow to a fresh embedded launchpad, restarts its server and times that query (median of 7).

Usage: ``.venv/bin/python benchmarks/spec_size.py --teacher runs/teacher-k300-w100/teacher.pt``; writes
``results/spec_size.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bson

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def build(teacher_path: Path, stage: bool):
    """The multi-phase ``DistillMaker`` flow with the teacher by value; ``stage=False``: as before staging."""
    from multi_phase import PHASES, multi_phase_maker
    from pymatgen.io.ase import AseAtomsAdaptor
    from teacher_from_labels import training_frames

    import pfd_atomate.distill.flows as distill_flows
    from _common import si_phase
    from pfd_atomate import ModelFile
    from pfd_atomate.data import Dataset
    from pfd_atomate.presets import dpa4_teacher

    import dataclasses

    maker = dataclasses.replace(multi_phase_maker().distill, teacher=dpa4_teacher(n_threads=1))
    teacher = ModelFile.from_path(teacher_path, backend="deepmd")
    structures = [AseAtomsAdaptor.get_structure(si_phase(p)) for p in PHASES]
    initial = training_frames(HERE / "data" / "si_phases_multi_phase_k300_w100_labels.json.gz", ["perturb"])
    initial = Dataset(frames=[f.without_labels() for f in initial.frames], name="initial-perturbed")
    original = distill_flows.staged
    if not stage:
        distill_flows.staged = lambda value, name: ([], value)
    try:
        return maker.make(teacher, structures, extra_frames=[initial]), teacher
    finally:
        distill_flows.staged = original


def measure(flow, teacher, root: Path) -> dict:
    """Spec sizes of the flow's fireworks and the idle worker's query time on a launchpad holding them."""
    from fireworks import FWorker
    from jobflow.managers.fireworks import flow_to_workflow

    from pfd_atomate.workflows.fireworks import launchpad
    from pfd_atomate.workflows.mongo import start_server

    wf = flow_to_workflow(flow)
    marker = teacher.content_b64[1000:1100]
    sizes = {fw.name: len(bson.encode(fw.to_db_dict())) for fw in wf.fws}
    carriers = [fw.name for fw in wf.fws if marker in str(fw.spec)]
    with start_server(root / "db") as server:
        lp = launchpad(server.host, server.port, name="fireworks", strm_lvl="ERROR")
        lp.reset("", require_password=False)
        lp.add_wf(wf)
    # a new server on the same folder reads the fireworks from disk, as a worker's server does in a long run
    with start_server(root / "db") as server:
        lp = launchpad(server.host, server.port, name="fireworks", strm_lvl="ERROR")
        query = {"state": "READY", **FWorker().query}  # what rlaunch asks for (LaunchPad._get_a_fw_to_run)
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            lp.fireworks.find_one(query, sort=[("spec._priority", -1)])
            times.append(time.perf_counter() - t0)
    return {"n_fireworks": len(sizes), "total_spec_MB": sum(sizes.values()) / 1e6,
            "largest_spec_MB": max(sizes.values()) / 1e6, "n_fireworks_carrying_the_teacher": len(carriers),
            "idle_worker_query_s_median": statistics.median(times), "idle_worker_query_s_all": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a deepmd-kit teacher model file")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _common import environment, save

    rows = {}
    with tempfile.TemporaryDirectory(prefix="spec-size-") as tmp:
        for stage in (False, True):
            name = "teacher staged once (now)" if stage else "teacher inline in every job (before)"
            flow, teacher = build(args.teacher, stage)
            rows[name] = measure(flow, teacher, Path(tmp) / ("staged" if stage else "inline"))
            r = rows[name]
            print(f"{name}: {r['n_fireworks']} fireworks, {r['total_spec_MB']:.1f} MB of specs "
                  f"({r['n_fireworks_carrying_the_teacher']} carry the teacher), idle worker's query "
                  f"{r['idle_worker_query_s_median'] * 1e3:.0f} ms")
    save("spec_size", {"benchmark": "spec_size", "environment": environment(1),
                       "system": "multi-phase Si DistillMaker flow (diamond, beta-Sn, BC8; default task groups), "
                                 f"teacher {args.teacher.name} ({teacher.size_bytes / 1e6:.1f} MB) given by value; "
                                 "embedded SecantusDB launchpad",
                       "rows": rows}, RESULTS)


if __name__ == "__main__":
    main()
