"""deepmd-kit (PyTorch backend) ``input.json`` templates.

The templates are deliberately small so that a model trains in minutes on a CPU; users
scale them up through ``DeepMDBackend.input_overrides`` (deep-merged into the result).

- ``se_e2_a``: two-body embedding descriptor (DeepPot-SE), the standard cheap model.
- ``se_atten_v2``: attention-based type-embedding descriptor with the attention layers
  switched off (``attn_layer = 0``), the descriptor of the distilled models in the PFD
  paper (PFD SI, "Distillation"), here with smaller networks.
- ``dpa2``: DPA-2 (repinit + repformer) with 3 small repformer layers, used to make tiny
  "foundation" checkpoints for tests; real fine-tuning starts from the published DPA-2
  checkpoint, whose architecture ``--use-pretrain-script`` takes over.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

TEMPLATES = ("se_e2_a", "se_atten_v2", "dpa2")

_FITTING = {"type": "ener", "neuron": [32, 32, 32], "resnet_dt": True}


def _descriptor(template: str, rcut: float, rcut_smth: float, sel: int | str) -> dict[str, Any]:
    # what the two student descriptors share
    embedding = {"rcut": rcut, "rcut_smth": rcut_smth, "sel": sel, "neuron": [8, 16, 32], "axis_neuron": 8}
    if template == "se_e2_a":
        return {"type": "se_e2_a", **embedding, "resnet_dt": False, "type_one_side": True}
    if template == "se_atten_v2":
        return {"type": "se_atten_v2", **embedding, "attn_layer": 0, "tebd_dim": 8}
    if template == "dpa2":
        return {
            "type": "dpa2",
            "repinit": {
                "rcut": rcut,
                "rcut_smth": rcut_smth,
                "nsel": sel,
                "neuron": [8, 16, 32],
                "axis_neuron": 8,
                "tebd_dim": 8,
                "activation_function": "tanh",
            },
            "repformer": {
                # the repformer sees a shorter range than repinit, as in DPA-2 (6 Å / 4 Å)
                "rcut": min(4.0, rcut),
                "rcut_smth": min(3.5, rcut_smth),
                "nsel": sel,
                "nlayers": 3,
                "g1_dim": 32,
                "g2_dim": 16,
                "attn2_hidden": 16,
                "attn2_nhead": 2,
                "attn1_hidden": 16,
                "attn1_nhead": 2,
                "axis_neuron": 4,
                "update_h2": False,
                "update_g1_has_conv": True,
                "update_g1_has_grrg": True,
                "update_g1_has_drrd": True,
                "update_g1_has_attn": False,
                "update_g2_has_g1g1": False,
                "update_g2_has_attn": True,
                "attn2_has_gate": True,
                "update_style": "res_residual",
                "update_residual": 0.01,
                "update_residual_init": "norm",
            },
            "add_tebd_to_repinit_out": False,
        }
    raise ValueError(f"unknown deepmd template {template!r}; choose one of {TEMPLATES}")


#: default cut-offs (rcut, rcut_smth) in Å per template
DEFAULT_CUTOFFS = {"se_e2_a": (6.0, 0.5), "se_atten_v2": (6.0, 0.5), "dpa2": (6.0, 0.5)}


def auto_prob_from_weights(n_systems: Sequence[int], weights: Sequence[float]) -> str:
    """deepmd ``auto_prob`` string that samples dataset ``i`` with relative weight ``weights[i]``.

    Datasets are consecutive blocks of systems; within a block systems are sampled in
    proportion to their size (``prob_sys_size;start:end:weight;...``).

    Parameters
    ----------
    n_systems: number of deepmd systems (one per formula) each dataset was written as.
    weights: relative weight per dataset, each > 0.

    Raises
    ------
    ValueError: length mismatch or a non-positive weight.
    """
    if len(n_systems) != len(weights):
        raise ValueError(f"{len(weights)} weights for {len(n_systems)} datasets")
    if any(not w > 0 for w in weights):
        raise ValueError(f"dataset weights must be > 0, got {list(weights)}")
    starts = itertools.accumulate(n_systems, initial=0)
    return "prob_sys_size;" + ";".join(f"{s}:{s + n}:{float(w):g}" for s, n, w in zip(starts, n_systems, weights))


def build_input(
    template: str,
    *,
    type_map: Sequence[str],
    systems: Sequence[str],
    auto_prob: str = "prob_sys_size",
    numb_steps: int,
    batch_size: int | str,
    start_lr: float,
    stop_lr: float,
    rcut: float | None,
    rcut_smth: float | None,
    sel: int | str,
    seed: int,
    disp_freq: int,
    save_freq: int,
    use_virial: bool,
    energy_weight: float = 1.0,
) -> dict[str, Any]:
    """A complete deepmd-kit ``input.json`` as a dict.

    Parameters
    ----------
    template: one of :data:`TEMPLATES`.
    type_map: element order of the model.
    systems: paths of deepmd/npy systems to train on.
    auto_prob: deepmd system sampling rule (see :func:`auto_prob_from_weights`).
    numb_steps: training steps; the learning rate decays exponentially from ``start_lr``
        to ``stop_lr`` about every ``numb_steps / 100`` steps (as in PFD SI, "Fine-tuning":
        20,000 steps, decay every 200).
    batch_size: frames per step or ``"auto"`` / ``"auto:N"`` (deepmd rule).
    rcut, rcut_smth: cut-off radius and start of the smoothing region, Å (``None`` = template
        default, 6.0 and 0.5).
    sel: max neighbours per type, or ``"auto"`` (from the data's neighbour statistics).
    seed: seed of network initialisation and batch sampling.
    disp_freq, save_freq: steps between ``lcurve.out`` lines / checkpoints.
    use_virial: give the virial a non-zero loss prefactor.
    energy_weight: factor on the energy and virial loss prefactors (deepmd-kit's 0.02 → 1, against
        forces 1000 → 1; the prefactors follow the learning rate from start to limit).

    Raises
    ------
    ValueError: unknown template.
    """
    default_rcut, default_smth = DEFAULT_CUTOFFS.get(template, (6.0, 0.5))
    descriptor = _descriptor(
        template,
        default_rcut if rcut is None else float(rcut),
        default_smth if rcut_smth is None else float(rcut_smth),
        sel,
    )
    descriptor["seed"] = seed
    return {
        "model": {
            "type_map": list(type_map),
            "descriptor": descriptor,
            "fitting_net": {**_FITTING, "seed": seed},
        },
        "learning_rate": {
            "type": "exp",
            "decay_steps": max(1, min(5000, numb_steps // 100)),
            "start_lr": start_lr,
            "stop_lr": stop_lr,
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02 * energy_weight,
            "limit_pref_e": 1.0 * energy_weight,
            "start_pref_f": 1000.0,
            "limit_pref_f": 1.0,
            "start_pref_v": 0.02 * energy_weight if use_virial else 0.0,
            "limit_pref_v": 1.0 * energy_weight if use_virial else 0.0,
        },
        "training": {
            "training_data": {"systems": list(systems), "batch_size": batch_size, "auto_prob": auto_prob},
            "numb_steps": numb_steps,
            "seed": seed,
            "disp_file": "lcurve.out",
            "disp_freq": disp_freq,
            "save_freq": save_freq,
            "save_ckpt": "model.ckpt",
            "max_ckpt_keep": 1,
        },
    }


#: ``model`` sections whose keys depend on their ``type``
TYPED_SECTIONS = ("descriptor", "fitting_net")


def trained_cutoff(template: str, rcut: float | None, rcut_smth: float | None,
                   overrides: dict[str, Any]) -> float | None:
    """Cutoff radius (Å) of a model trained from scratch on ``template`` with these ``rcut`` / ``rcut_smth``
    (``None``: the template's) and ``input_overrides``: the largest ``rcut`` of its merged ``model.descriptor``
    (of each part of a ``hybrid``, of DPA-2's ``repinit`` / ``repformer``; DPA-3's ``e_rcut``). ``None`` when
    the descriptor names no cutoff.

    Raises
    ------
    ValueError: unknown template.
    """
    if template not in DEFAULT_CUTOFFS:
        raise ValueError(f"template must be one of {list(DEFAULT_CUTOFFS)}, got {template!r}")
    default_rcut, default_smth = DEFAULT_CUTOFFS[template]
    config = {"model": {"descriptor": _descriptor(template, default_rcut if rcut is None else float(rcut),
                                                  default_smth if rcut_smth is None else float(rcut_smth), "auto")}}
    found: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("rcut", "e_rcut") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.append(float(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(merge_overrides(config, overrides)["model"]["descriptor"])
    return max(found, default=None)


def merge_overrides(config: dict[str, Any], overrides: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """``overrides`` deep-merged into the ``input.json`` dict ``config`` (in place; returned).

    Nested dicts merge and anything else replaces, except that a ``model.descriptor`` or ``model.fitting_net``
    override naming another ``type`` than ``config``'s replaces that section whole: its keys are the other type's,
    and deepmd-kit's strict input check rejects a mix (a ``hybrid`` descriptor beside the template's ``rcut``).
    A descriptor replaced that way gets ``seed`` where it (or, for ``hybrid``, a descriptor of its ``list``) sets
    none, so that the training stays reproducible.
    """
    from maggma.utils import recursive_update

    overrides = copy.deepcopy(overrides)
    model = overrides.get("model") if isinstance(overrides.get("model"), dict) else {}
    for section in TYPED_SECTIONS:
        new, old = model.get(section), config.get("model", {}).get(section)
        if isinstance(new, dict) and isinstance(old, dict) and new.get("type", old.get("type")) != old.get("type"):
            config["model"][section] = model.pop(section)
            if section == "descriptor" and seed is not None:
                for part in config["model"][section].get("list", [config["model"][section]]):
                    part.setdefault("seed", seed)
    recursive_update(config, overrides)
    return config
