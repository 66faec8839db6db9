"""Default parts of a PFD run: the foundation model, the student, exploration and distillation MD.

Every default of :class:`~pfd_atomate.flows.PFDMaker` comes from here, so ``PFDMaker()`` runs as
it is and each part can be swapped by one argument. The numbers are the measured ones
(``benchmarks/``, docs/choosing-a-foundation-model.md).
"""

from __future__ import annotations

import copy
from typing import Any

from maggma.utils import recursive_update

from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.perturb.jobs import PerturbMaker
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

#: the least fine-tuning steps of the default teacher (one frame each; ``max(DPA4_MIN_STEPS, 10 N)`` for N
#: labels). Fine-tuning on the 18 initial CP2K labels of the multi-phase Si run (``benchmarks/teacher_from_labels.py
#: --set numb_steps=...``, held-out CP2K sets of diamond, β-Sn and BC8): 400 steps (seeds 1 / 2) diamond phonon band
#: RMSE 0.102 / 0.111 THz, E-V RMSE 2.2 / 2.1 / 6.6 meV/atom, diamond MD 0.015 eV/Å; 800 steps 0.087 / 0.089 THz,
#: 1.5 / 1.4 / 4.2, 0.013, every phase's forces as good or better; 1600 steps 0.082 THz but β-Sn worse (MD
#: 0.027 against 0.023 eV/Å: six β-Sn frames over-fitted).
DPA4_MIN_STEPS = 800


def dpa4_teacher(**overrides: Any) -> DeepMDBackend:
    """The default foundation model: DPA-4 (``dpa4-neo``) fine-tuned with deepmd-kit.

    Training budget: ``max(DPA4_MIN_STEPS, 10 N)`` steps (800) of one frame for N labelled frames, learning rate
    :data:`DPA4_LEARNING_RATE`, energy and virial weighted :data:`DPA4_ENERGY_WEIGHT` times
    deepmd-kit's default, the energy bias re-fitted after training. ``overrides`` are
    :class:`DeepMDBackend` fields.
    """
    start_lr, stop_lr = DPA4_LEARNING_RATE
    settings: dict[str, Any] = {"base_model": "dpa4-neo", "numb_steps": DPA4_MIN_STEPS, "steps_per_frame": 10.0,
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
#: 48000 to 1e-4 (1.55x the teacher); decaying to 1e-7 made it worse (0.054). On three Si phases with the
#: wider nets of STUDENT_NETS, 48000 → 96000 steps took it from 2.2x to 1.7x / 1.5x its teacher (two seeds). On
#: the 2770 teacher frames of three Si phases in 8- and 64-atom cells (``benchmarks/student_cell_sizes.py``;
#: teacher 0.0167 / 0.015 eV/Å on 46 8-atom / 4 64-atom CP2K MD frames) 96000 further steps of the 96000-step
#: student (3.16e-4 → 1e-4, the second half of a 192000-step schedule) took it from 0.0405 / 0.057 to 0.0311 /
#: 0.049 (2.4x → 1.9x, 3.7x → 3.2x); the same steps decaying to 1e-5 reached 0.0352 / 0.053. One 192000-step
#: schedule from scratch (137 min, one thread): 0.0364 / 0.047 (2.2x / 3.0x), copy error on held-out teacher
#: frames 0.049 / 0.082 → 0.037 / 0.074 eV/Å (8- / 64-atom cells).
STUDENT_STEPS = 192000
STUDENT_STOP_LR = 1e-4

#: network sizes of the default student, wider than the se_e2_a template's ([8, 16, 32] / [32, 32, 32]). On the
#: teacher frames of three Si phases (``student_variants.py --system si-phases``; teacher 0.011 eV/Å on 46
#: independent CP2K MD frames) 48000 steps gave 0.036 eV/Å (3.3x), these nets 0.024 (2.2x), these nets and 96000
#: steps 0.019 / 0.017 with two seeds (1.7x / 1.5x); the paper's [25, 50, 100] / [240, 240, 240] were no better than
#: these at 48000 steps (0.026) and 1.7x slower per MD step. The price: 33 % more time per MD step (46 against
#: 35 ms per 512-atom call, compressed, one thread, two invocations) and 1.35x the training time per step (1358
#: against 1004 s for 48000 steps on 3C-SiC, ``student_variants.py --system sic``).
STUDENT_NETS: dict[str, Any] = {"model": {"descriptor": {"neuron": [16, 32, 64], "axis_neuron": 12},
                                          "fitting_net": {"neuron": [96, 96, 96]}}}

#: cutoff of the default student (Å); the default teacher MD for distillation includes cells at least this wide
STUDENT_RCUT = 6.0


def se_e2_a_student(**overrides: Any) -> DeepMDBackend:
    """The default student: deepmd-kit ``se_e2_a`` (rcut 6 Å, the nets of :data:`STUDENT_NETS`) trained once
    from scratch, with the virial, compressed after freezing: :data:`STUDENT_STEPS` steps, learning rate
    1e-3 → :data:`STUDENT_STOP_LR` (137 min on one CPU thread for 2770 Si frames of 8 and 64 atoms, 40-45 ms per
    step alone or beside one other process; on 8-atom frames alone about half that). ``overrides`` are
    :class:`DeepMDBackend` fields; their ``input_overrides`` are merged into the default nets (the demo trains
    12000 steps, to stay short), except a descriptor of another type than the template's (e.g. ``hybrid``),
    which comes whole without the default's descriptor sizes."""
    settings: dict[str, Any] = {"template": "se_e2_a", "numb_steps": STUDENT_STEPS, "stop_lr": STUDENT_STOP_LR,
                                "rcut": STUDENT_RCUT, "rcut_smth": 0.5, "seed": 1}
    # the user's input_overrides go on top of the default nets, not instead of them
    nets = copy.deepcopy(STUDENT_NETS)
    user = copy.deepcopy(overrides.pop("input_overrides", {}))
    template = overrides.get("template", settings["template"])
    if (user.get("model") or {}).get("descriptor", {}).get("type", template) != template:
        del nets["model"]["descriptor"]  # the nets' sizes are the template's keys
    recursive_update(nets, user)
    return DeepMDBackend(**(settings | overrides), input_overrides=nets)


def exploration_stages() -> list[Stage]:
    """Two exploration stages: NVT at 300, 600 and 900 K, then NPT at 600 K and 0 / 1 GPa.

    2 ps per task (1000 steps of 2 fs), a frame every 50 steps; the PFD paper's Si ran 4 ps at
    500 K and 0.001 / 1 GPa per stage.
    """
    md = {"n_steps": 1000, "time_step": 2.0, "traj_interval": 50}
    nvt = TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", **md)
    npt = TaskGroup(temperatures=[600.0], pressures=[0.0, 1.0], ensemble="npt", **md)
    return [Stage(name="nvt", task_groups=[nvt]), Stage(name="npt", task_groups=[npt])]


def distillation_perturb() -> PerturbMaker:
    """Strained and rattled copies of the input structures for the distillation teacher to label
    (``DistillMaker.perturb``): 100 frames per structure, cell strain up to 6 %, atoms moved 0.15 Å (RMS length).

    MD at working temperatures rarely strains the cell by 6 % or brings two atoms this close; a student
    that never saw such frames extrapolates there. Measured on three Si phases (benchmarks/README.md,
    "The student"): E-V RMSE 42 / 36 / 73 -> 26 / 24 / 23 meV/atom, diamond a0 5.377 -> 5.465 Å and
    B0 135 -> 93 GPa (CP2K 5.464 Å, 88.8 GPa), at the cost of 300 teacher labels (about 0.3 s each).
    Why not wider: 0.3 Å frames (pairs down to 1.44 Å) fix the student's forces where two atoms come closer
    than 1.85 Å, but their 10-35 eV/Å forces take over the loss and cost a third or more on every MD set
    (benchmarks/README.md, "Short pairs").
    """
    return PerturbMaker(n_frames=100, cell_pert_fraction=0.06,
                        atom_pert_distance=0.15, seed=7)


def distillation_task_groups(min_length: float = STUDENT_RCUT) -> list[TaskGroup]:
    """Teacher MD for distillation: in the input cells NVT at 300, 600 and 900 K and NPT at 600 K, -1 / 2 GPa
    (the student must learn energy against volume), 2 ps each, a frame every 5 steps; and NVT at 300 and 900 K,
    1.2 ps, a frame every 10 steps, in cells at least ``min_length`` wide (Å, ``TaskGroup.min_length``; the
    student's cutoff: ``DistillMaker`` passes its student's, :data:`STUDENT_RCUT` for the default student).

    Why the large cells: in a cell narrower than the cutoff every atom sees its own periodic images move with
    it. A student taught only such frames (8-atom Si cells) had 1.3x its teacher's force RMSE on CP2K MD frames in
    8-atom cells but 8x in 64-atom cells (0.122 against 0.015 eV/Å; 0.135 eV/Å from its teacher on 43 held-out
    64-atom teacher frames of three phases), 0.67 THz diamond phonon band RMSE. With the large cells (12 % of
    its frames): 0.057 eV/Å in 64-atom cells, 0.31 THz, a0 / B0 on CP2K's, at 2.4x its teacher in 8-atom
    cells (``benchmarks/supercell_student.py``, ``student_cell_sizes.py``).
    """
    md = {"n_steps": 1000, "time_step": 2.0, "traj_interval": 5}
    return [
        TaskGroup(temperatures=[300.0, 600.0, 900.0], ensemble="nvt", **md),
        TaskGroup(temperatures=[600.0], pressures=[-1.0, 2.0], ensemble="npt", **md),
        TaskGroup(temperatures=[300.0, 900.0], ensemble="nvt", n_steps=600, time_step=2.0, traj_interval=10,
                  min_length=min_length),
    ]
