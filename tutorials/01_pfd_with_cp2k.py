"""Tutorial 1: PFD for diamond Si with CP2K labels, step by step.

Run inside the project's venv (``bash scripts/setup_env.sh`` creates it):

    .venv/bin/python tutorials/01_pfd_with_cp2k.py

This is a smaller version of ``pfd_atomate.demo`` (one stage, few labels) that finishes in
about 10 minutes on 2 cores; every setting is spelled out so you can change it.
"""

from pathlib import Path

from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.evaluate.schemas import ConvergenceCriteria, TrustWindow
from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.flows import PFDMaker
from pfd_atomate.label.cp2k import cp2k_static_maker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.store import embedded_store, fetch_model
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.train.deepmd import DeepMDBackend

# 1. the input: any pymatgen Structure (here the 8-atom conventional diamond cell)
si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])

# 2. the labeller: any atomate2 static Maker; here CP2K with basis files Debian's cp2k-data ships
label = LabelMaker(static_maker=cp2k_static_maker(kpoints=(2, 2, 2)), min_success_ratio=0.75)

# 3. the foundation model and its fine-tuning settings (CHGNet ships its weights: works offline)
teacher = CHGNetBackend(epochs=10, learning_rate=1e-3, batch_size=4)

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

# 5. distillation into a fast deepmd-kit student
distill = DistillMaker(
    student=DeepMDBackend(template="se_e2_a", numb_steps=1000, rcut=5.0),
    task_groups=[TaskGroup(temperatures=[300, 600, 900], ensemble="nvt", n_steps=500, traj_interval=5)],
)

maker = PFDMaker(perturb=PerturbMaker(n_frames=4), label=label, finetune=finetune, distill=distill)
flow = maker.make(si)  # bad input (overlapping atoms, unknown elements) fails here, before any job runs

# 6. run on the embedded on-disk store (a MongoDB JobStore works the same way)
run_dir = Path("runs/tutorial-01")
store = embedded_store(run_dir)
run_locally(flow, store=store, root_dir=run_dir / "jobs", create_folders=True, ensure_success=True)

# 7. read the results back with plain queries
store.connect()
report = store.query_one({"name": "pfd report"})["output"]
print("DFT labels spent:", report["n_dft_labels"], "iterations:", report["n_iterations"])
for it in report["iterations"]:
    print(f"  stage {it['stage']} iteration {it['iteration']}: "
          f"energy RMSE {it['energy_rmse']:.4f} eV/atom, force RMSE {it['force_rmse']:.3f} eV/Å")
student = next(m for m in report["lineage"] if m["role"] == "student")
print("student model file:", fetch_model(store, student["location"]["job_uuid"]).materialize())
