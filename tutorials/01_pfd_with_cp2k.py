"""Tutorial 1: PFD for diamond Si with CP2K labels, step by step.

Run inside the project's venv (``bash scripts/setup_env.sh`` creates it):

    .venv/bin/python tutorials/01_pfd_with_cp2k.py

A smaller version of the demo (one stage, few labels) that finishes in about 15 minutes on 2 cores;
every setting is spelled out so you can change it. Run it again after an interruption: it resumes.
"""

from pathlib import Path

from pymatgen.core import Lattice, Structure

from pfd_atomate import (
    ConvergenceCriteria,
    DeepMDBackend,
    DistillMaker,
    FinetuneMaker,
    LabelMaker,
    PerturbMaker,
    PFDMaker,
    SelectMaker,
    Stage,
    TaskGroup,
    TrustWindow,
    cp2k_static_maker,
    presets,
    queries,
    run_flow,
)
from pfd_atomate.store import fetch_model
from pfd_atomate.workflows.local import attach_run

# 1. the input: any pymatgen Structure (here the 8-atom conventional diamond cell), or ASE Atoms
si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])

# 2. the labeller: any atomate2 static Maker; here CP2K with basis files Debian's cp2k-data ships
label = LabelMaker(static_maker=cp2k_static_maker(kpoints=(2, 2, 2)), min_success_ratio=0.75)

# 3. the foundation model: DPA-4 (fetched at set-up, SHA-256 checked); presets.chgnet_teacher() for CHGNet
teacher = presets.dpa4_teacher(numb_steps=200, n_threads=1)

# 4. exploration stages (task groups of temperatures x pressures), selection, convergence
finetune = FinetuneMaker(
    trainer=teacher,
    stages=[Stage(task_groups=[TaskGroup(temperatures=[300, 900], ensemble="nvt", n_steps=200, traj_interval=20)])],
    select=SelectMaker(n_select=3, method="entropy"),  # QUESTS, PFD SI Algorithm 1
    criteria=ConvergenceCriteria(energy_rmse=0.005, force_rmse=0.10),  # or the ratio of accurate frames
    trust_window=TrustWindow(force_high=1.0),  # leave out frames the model gets wildly wrong
    max_iterations=2,
    init_from="previous",
)

# 5. distillation into a fast deepmd-kit student (compressed after training)
distill = DistillMaker(
    student=DeepMDBackend(template="se_e2_a", numb_steps=2000, rcut=5.0, n_threads=1),
    task_groups=[TaskGroup(temperatures=[300, 600, 900], ensemble="nvt", n_steps=300, traj_interval=5)],
)

maker = PFDMaker(perturb=PerturbMaker(n_frames=4), label=label, finetune=finetune, distill=distill)
flow = maker.make(si)  # bad input (overlapping atoms, unknown elements, bad settings) fails here

# 6. run on the local engine: two single-threaded workers, the database inside the run folder
run_dir = Path("runs/tutorial-01")
result = run_flow(flow, run_dir, workers=2)
print("state:", result.state, "resumed:", result.resumed, f"wall time {result.wall_time_s:.0f} s")

# 7. read the results back: the report, the iterations, the student model file
with attach_run(run_dir) as (store, _, run):
    report = queries.run_report(store, run["flow_uuid"])
    print("DFT labels:", report["n_dft_labels"], "paid:", report["n_paid_labels"], "iterations:",
          report["n_iterations"])
    for row in queries.iteration_tests(store, run["flow_uuid"]):
        print(f"  stage {row['stage']} iteration {row['iteration']}: energy RMSE {row['energy_rmse']:.4f} eV/atom, "
              f"force RMSE {row['force_rmse']:.3f} eV/Å")
    student = next(m for m in report["lineage"] if m["role"] == "student")
    print("student model file:", fetch_model(store, student["location"]["job_uuid"]).materialize())
