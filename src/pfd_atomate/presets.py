"""Default parts of a PFD run: the foundation model, the student, exploration and distillation MD.

Every default of :class:`~pfd_atomate.flows.PFDMaker` comes from here, so ``PFDMaker()`` runs as
it is and each part can be swapped by one argument. The numbers are the measured ones
(``benchmarks/``, docs/choosing-a-foundation-model.md).
"""

from __future__ import annotations

from typing import Any

from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.train.deepmd import DeepMDBackend

#: fine-tuning DPA-4 (SeZM): Adam at 1e-3 or 1e-4 ruined the pretrained model within 50 steps
#: (8-atom Si, CP2K labels: held-out force RMSE 0.062 -> 0.11-0.19 eV/Å); 1e-5 -> 1e-6 improves it
DPA4_LEARNING_RATE = (1e-5, 1e-6)

#: fine-tuning DPA-4 on diamond, β-Sn and BC8 Si (42 CP2K labels, 420 steps), each phase's mean energy error
#: minus diamond's on independent CP2K sets, β-Sn / BC8 (meV/atom), and the diamond force RMSE (eV/Å), by
#: ``DeepMDBackend.energy_weight`` (``benchmarks/finetune_weights.py``): 1: -22.5 / -7.1, 0.028; 10: -16.7 /
#: -4.9, 0.028; 30: -7.5 / -2.0, 0.029; 100: -1.5 / -0.1, 0.030; 300: +0.3 / -0.6, 0.031. Four times the steps
#: at weight 1: -19.1 / -0.7. With deepmd-kit's weighting the forces decide and the phases keep the foundation
#: model's relative energies, so the loop's labels could not correct them.
DPA4_ENERGY_WEIGHT = 100.0


def dpa4_teacher(**overrides: Any) -> DeepMDBackend:
    """The default foundation model: DPA-4 (``dpa4-neo``) fine-tuned with deepmd-kit.

    Training budget: ``max(400, 10 N)`` steps of one frame for N labelled frames, learning rate
    :data:`DPA4_LEARNING_RATE`, energy and virial weighted :data:`DPA4_ENERGY_WEIGHT` times
    deepmd-kit's default, the energy bias re-fitted after training. ``overrides`` are
    :class:`DeepMDBackend` fields.
    """
    start_lr, stop_lr = DPA4_LEARNING_RATE
    settings: dict[str, Any] = {"base_model": "dpa4-neo", "numb_steps": 400, "steps_per_frame": 10.0,
                                "batch_size": 1, "start_lr": start_lr, "stop_lr": stop_lr,
                                "energy_weight": DPA4_ENERGY_WEIGHT, "seed": 1}
    return DeepMDBackend(**(settings | overrides))


def chgnet_teacher(**overrides: Any) -> CHGNetBackend:
    """CHGNet 0.3.0 (weights in the ``chgnet`` wheel) as the foundation model; ``overrides`` are
    :class:`CHGNetBackend` fields."""
    return CHGNetBackend(**({"epochs": 20, "learning_rate": 1e-3, "batch_size": 4, "seed": 0} | overrides))


#: training length and final learning rate of the default student (Adam, exponential decay from 1e-3). The
#: student copies its teacher better the longer and the harder it trains: on the 725 teacher frames of
#: 3C-SiC8 (``benchmarks/student_variants.py --system sic``) its force RMSE on independent CP2K MD frames
#: (teacher 0.0077 eV/Å) was 0.031-0.037 after 12000 steps decaying to 1e-5, 0.018-0.024 after 12000 steps
#: to 1e-4 (two seeds each), 0.017 after 48000 steps to 1e-5, 0.012 after 96000 to 1e-5 and 0.012 after
#: 48000 to 1e-4 (1.55x the teacher); decaying to 1e-7 made it worse (0.054).
STUDENT_STEPS = 48000
STUDENT_STOP_LR = 1e-4


def se_e2_a_student(**overrides: Any) -> DeepMDBackend:
    """The default student: deepmd-kit ``se_e2_a`` trained once from scratch, with the virial,
    compressed after freezing: :data:`STUDENT_STEPS` steps, learning rate 1e-3 → :data:`STUDENT_STOP_LR`
    (17 min on one CPU thread for 725 8-atom frames). ``overrides`` are :class:`DeepMDBackend` fields
    (the demo trains 12000 steps, to stay short)."""
    settings: dict[str, Any] = {"template": "se_e2_a", "numb_steps": STUDENT_STEPS, "stop_lr": STUDENT_STOP_LR,
                                "rcut": 6.0, "rcut_smth": 0.5, "seed": 1}
    return DeepMDBackend(**(settings | overrides))


def exploration_stages() -> list[Stage]:
    """Two exploration stages: NVT at 300, 600 and 900 K, then NPT at 600 K and 0 / 1 GPa.

    2 ps per task (1000 steps of 2 fs), a frame every 50 steps; the PFD paper's Si ran 4 ps at
    500 K and 0.001 / 1 GPa per stage.
    """
    md = {"n_steps": 1000, "time_step": 2.0, "traj_interval": 50}
    nvt = TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", **md)
    npt = TaskGroup(temperatures=[600.0], pressures=[0.0, 1.0], ensemble="npt", **md)
    return [Stage(name="nvt", task_groups=[nvt]), Stage(name="npt", task_groups=[npt])]


def distillation_task_groups() -> list[TaskGroup]:
    """Teacher MD for distillation: NVT at 300, 600 and 900 K and NPT at 600 K, -1 / 2 GPa (the
    student must learn energy against volume), 2 ps each, a frame every 5 steps."""
    md = {"n_steps": 1000, "time_step": 2.0, "traj_interval": 5}
    return [
        TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", **md),
        TaskGroup(temperatures=[600.0], pressures=[-1.0, 2.0], ensemble="npt", **md),
    ]
