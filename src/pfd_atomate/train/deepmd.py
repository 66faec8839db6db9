"""deepmd-kit (PyTorch backend) trainer: fine-tune a DPA foundation model or train a student from scratch.

Training runs ``dp --pt train`` (then ``dp --pt freeze`` and, for students, ``dp --pt compress``)
as subprocesses in a work directory; the result is a :class:`ModelFile`. Inference
(:meth:`DeepMDBackend.predict`, :meth:`DeepMDBackend.calculator`) runs in-process through
``deepmd.infer.DeepPot`` / ``deepmd.calculator.DP``, on CUDA when torch sees a GPU.

Model files: a frozen TorchScript model (``.pth``) where the descriptor can be scripted, else a
weights-only training checkpoint (``.pt``). DPA-4 (SeZM) is the "else": deepmd-kit 3.2 freezes it
into an AOTInductor archive (``.pt2``) by compiling C++, which took 10 min on one CPU core here
(inference then runs 2x faster: not worth it inside the loop), while the checkpoint loads and
fine-tunes directly. Its ``torch.compile`` of the training graph (``use_compile`` in the
checkpoint's model definition) is switched off by default for the same reason: 505 s of
compilation bought 0.27 instead of 0.33 s per step (8-atom Si, one thread).

Fine-tuning follows PFD SI, "Fine-tuning": the descriptor (and, for single-task models, the
fitting net) start from the pretrained weights (``dp --pt train --finetune``), the energy
bias is re-fitted to the new data, and training continues with a small learning rate.
``--finetune`` only reads ``.pt`` checkpoints (measured with deepmd-kit 3.2.0: a frozen
``.pth`` fails inside ``torch.load(weights_only=True)``), so a frozen model given as the
starting point - the previous iteration's model when restarting from M_i, or a frozen
foundation model - is first rebuilt into a weights-only checkpoint
(:func:`checkpoint_from_frozen`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfd_atomate.data import Dataset, ModelFile
from pfd_atomate.data.models import sha256_of_file
from pfd_atomate.process import die_with_parent
from pfd_atomate.train import deepmd_checkpoints as checkpoints
from pfd_atomate.train import foundation
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.deepmd_templates import (
    DEFAULT_CUTOFFS,
    TEMPLATES,
    auto_prob_from_weights,
    build_input,
    merge_overrides,
    trained_cutoff,
)

logger = logging.getLogger(__name__)

_FROZEN_NAME = "frozen_model.pth"
_COMPRESSED_NAME = "compressed_model.pth"
_CHECKPOINT_NAME = "model.pt"
#: descriptors deepmd-kit cannot script into a TorchScript ``.pth`` (see module docstring)
UNSCRIPTABLE_DESCRIPTORS = ("dpa4", "sezm")
_LOG_NAME = "dp_train.log"
_LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- model files


def _load_model_params(path: Path) -> dict[str, Any]:
    """Model definition (the ``model`` section of input.json) stored in a checkpoint or frozen model.

    Read once per file version (path, size, modification time): loading a frozen model to read it took
    120 ms, and :meth:`DeepMDBackend.predict` asks for the type map of a model given without one on
    every call (a 64-atom student's evaluation itself takes 20-80 ms)."""
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"{path}: not a deepmd-kit PyTorch model (expected a .pt checkpoint or a frozen .pth)")
    stat = path.stat()
    return copy.deepcopy(_read_model_params(str(path.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _read_model_params(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """:func:`_load_model_params` uncached (``size`` and ``mtime_ns`` only key the cache)."""
    import torch

    import deepmd.pt.cxx_op  # noqa: F401  (registers deepmd's TorchScript ops before jit.load)

    try:
        if path.endswith(".pth"):
            return json.loads(torch.jit.load(path, map_location="cpu").get_model_def_script())
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        return state["_extra_state"]["model_params"]
    except Exception as err:
        # malformed bytes reach torch's loaders as any error type (IndexError, struct.error, RuntimeError, ...)
        raise ValueError(f"{path} is not a deepmd-kit model file: refused ({err!r})") from err


def _branch_params(path: str | Path, model_branch: str | None) -> dict[str, Any]:
    """Parameters of one branch of the (possibly multi-task) model definition in a model file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"deepmd model file not found: {path}")
    params = _load_model_params(path)
    if "model_dict" not in params:
        if model_branch not in (None, "", "Default", "RANDOM"):
            raise ValueError(f"{path} is a single-task model; it has no model branch {model_branch!r}")
        return params
    from deepmd.utils.model_branch_dict import get_model_dict

    branches = params["model_dict"]
    if model_branch in (None, "", "RANDOM"):
        # deepmd fine-tunes the first branch's descriptor with a new fitting net in that case
        return branches[next(iter(branches))]
    aliases, _ = get_model_dict(branches)
    if model_branch not in aliases:
        raise ValueError(f"{path} has no model branch {model_branch!r}; branches: {list(branches)}")
    return branches[aliases[model_branch]]


def read_type_map(path: str | Path, model_branch: str | None = None) -> list[str]:
    """Element order (type map) of a deepmd-kit PyTorch checkpoint (``.pt``) or frozen model (``.pth``).

    Parameters
    ----------
    path: model file.
    model_branch: branch (head) of a multi-task checkpoint; ``None`` takes the first branch
        (the one deepmd-kit fine-tunes when no branch is chosen).

    Returns
    -------
    list of element symbols, in the model's type order.

    Raises
    ------
    FileNotFoundError: ``path`` does not exist.
    ValueError: not a ``.pt``/``.pth`` file, or an unknown model branch.
    """
    return list(_branch_params(path, model_branch)["type_map"])


def checkpoint_from_frozen(frozen: str | Path, checkpoint: str | Path) -> Path:
    """Rebuild a weights-only training checkpoint (``.pt``) from a frozen model (``.pth``).

    ``dp --pt train --finetune`` reads only checkpoints; the frozen model keeps the full
    model definition and every weight, which is all a checkpoint without optimizer state
    holds, so the two describe the same model.

    Parameters
    ----------
    frozen: frozen TorchScript model written by ``dp --pt freeze``.
    checkpoint: output path (should end in ``.pt``).

    Returns
    -------
    Path of the checkpoint.

    Raises
    ------
    FileNotFoundError: ``frozen`` does not exist.
    """
    import deepmd.pt.cxx_op  # noqa: F401  (registers deepmd's TorchScript ops before jit.load)
    import torch
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    frozen = Path(frozen)
    if not frozen.is_file():
        raise FileNotFoundError(f"frozen deepmd model not found: {frozen}")
    scripted = torch.jit.load(str(frozen), map_location="cpu")
    params = json.loads(scripted.get_model_def_script())
    model = get_model(params)
    model.load_state_dict(scripted.state_dict())
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ModelWrapper(model, model_params=params).state_dict()}, checkpoint)
    return checkpoint


def read_observed_types(path: str | Path, model_branch: str | None = None) -> list[str] | None:
    """Elements a foundation checkpoint saw in training (``model.info.observed_type``), if recorded.

    deepmd-kit writes this list into the model definition of pretrained models (``dp show ...
    observed-type``); elements of the type map outside it have untrained embeddings.

    Returns
    -------
    list of element symbols, or ``None`` when the model does not record them.

    Raises
    ------
    FileNotFoundError, ValueError: as :func:`read_type_map`.
    """
    observed = (_branch_params(path, model_branch).get("info") or {}).get("observed_type")
    return list(observed) if observed else None


def descriptor_type(params: dict[str, Any]) -> str:
    """Lower-case descriptor type of a model definition ("se_e2_a", "dpa2", "dpa4", ...)."""
    descriptor = params.get("descriptor") or {}
    return str(descriptor.get("type", params.get("type", ""))).lower()


def can_compress(params: dict[str, Any]) -> bool:
    """Whether ``dp --pt compress`` (tabulated embedding nets) supports this model definition.

    deepmd-kit 3.2 tabulates the two-body embedding descriptors (``se_e2_a``, ``se_e2_r``,
    ``se_e3``) and the attention descriptors when no attention layer is active
    (``se_atten_v2``/``dpa1`` with ``attn_layer == 0``), and a ``hybrid`` of such descriptors.
    """
    kind = descriptor_type(params)
    if kind == "hybrid":  # deepmd-kit tabulates a hybrid when it can tabulate every part
        return all(can_compress({"descriptor": part}) for part in params["descriptor"].get("list", []))
    if kind in ("se_e2_a", "se_a", "se_e2_r", "se_r", "se_e3", "se_t"):
        return True
    if kind in ("se_atten_v2", "se_atten", "dpa1"):
        return int((params.get("descriptor") or {}).get("attn_layer", 2)) == 0
    return False


@functools.lru_cache(maxsize=4)
def _dp_calculator(sha256: str, path: str):
    """A loaded ``deepmd.calculator.DP`` per model (``sha256`` is the key; ``path`` tells where the file is)."""
    from deepmd.calculator import DP

    return DP(model=path)


def strip_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """Write a weights-only copy of a deepmd-kit training checkpoint (optimizer state dropped).

    ``DeepPot``/``DP`` and ``dp --pt train --finetune`` read the ``model`` entry only; the
    optimizer state would triple the file (13.7 MB instead of 4.6 MB for DPA-4).

    Raises
    ------
    FileNotFoundError: ``checkpoint`` does not exist.
    """
    import torch

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"deepmd checkpoint not found: {checkpoint}")
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    output = Path(output)
    torch.save({"model": state.get("model", state)}, output)
    return output


# --------------------------------------------------------------------------- backend


@dataclass
class DeepMDBackend(TrainerBackend):
    """deepmd-kit (PyTorch) trainer backend.

    Attributes
    ----------
    template: model template for training from scratch, one of "se_e2_a", "se_atten_v2",
        "dpa2" (small CPU-sized networks, see :mod:`pfd_atomate.train.deepmd_templates`).
        Ignored when fine-tuning: the pretrained model's architecture is used
        (``--use-pretrain-script``).
    type_map: element order of the model; default: the sorted elements of the data (from
        scratch) or the starting model's full type map (fine-tuning; DPA-4 needs its full
        118-element map, ``change_type_map`` is not implemented for SeZM).
    base_model: foundation model to fine-tune: a registry name of
        :mod:`pfd_atomate.train.foundation` (``"dpa4-neo"``, fetched and SHA-checked on the
        worker), or the path of a deepmd-kit checkpoint (``.pt``, e.g. DPA-2/DPA-3.1, single- or
        multi-task) or frozen model (``.pth``); ``None`` trains from scratch.
    model_branch: model branch (head) of a multi-task ``base_model`` (``--model-branch``).
    numb_steps: training steps (the minimum when ``steps_per_frame`` is set).
    steps_per_frame: grow the training with the data: ``max(numb_steps, ceil(steps_per_frame *
        n_frames))`` steps (a fixed budget per label, as the benchmarks' rule max(400, 10 N));
        ``None``: always ``numb_steps``.
    batch_size: frames per step, or "auto" / "auto:N" (deepmd: at least N atoms per batch).
    start_lr, stop_lr: learning rate at the first and last step (exponential decay).
    rcut, rcut_smth: cut-off radius and smoothing start, Å (``None``: template default, 6.0/0.5).
    sel: max neighbours per type or "auto" (from neighbour statistics of the data).
    seed: seed of initialisation and batch sampling.
    disp_freq, save_freq: steps between learning-curve lines / checkpoints (``None``: a tenth of the
        steps / :func:`default_save_freq`). A training started again in the same work folder with the
        same inputs continues from its newest checkpoint (:mod:`~pfd_atomate.train.deepmd_checkpoints`).
    input_overrides: deep-merged into the generated input.json last (any deepmd key); a ``model.descriptor``
        or ``model.fitting_net`` of another ``type`` than the template's replaces it whole (e.g. a ``hybrid``
        descriptor; :func:`~pfd_atomate.train.deepmd_templates.merge_overrides`).
    use_virial: train on the virial when every frame has one (default). Frames of several
        volumes need it: without it a student distilled from NPT frames missed the teacher's
        energies by 69 meV/atom, with it by 3.6 meV/atom at the same 3000 steps (Si8,
        see docs/demo.md).
    compress: ``dp --pt compress`` the frozen model after training (tabulated embedding nets,
        faster inference); ``None`` (default) compresses whenever the descriptor supports it
        (:func:`can_compress`: the se_e2_a / se_atten_v2 students), ``False`` never.
    compile: keep ``torch.compile`` of the training graph where the starting model asks for it
        (DPA-4's ``use_compile``); off by default (see the module docstring).
    energy_weight: factor on the loss prefactors of energy and virial (deepmd-kit's defaults, 0.02 → 1
        against forces 1000 → 1, are 1.0). A force-dominated loss leaves the energy of one phase
        against another where the foundation model had it: fine-tuning DPA-4 on 42 CP2K labels of
        diamond, β-Sn and BC8 Si put β-Sn 22.5 meV/atom too low against diamond with 1, 1.5 with
        100, forces unchanged (``benchmarks/finetune_weights.py``). The re-fitted energy bias
        cannot do it: it is one constant per element.
    refit_bias: after training (fine-tune or from scratch), re-fit the per-element energy bias to
        the training labels by least squares (``dp --pt change-bias -m change``, as deepmd-kit does
        before fine-tuning): the force-dominated loss lets the mean energy drift (DPA-4 on 40 CP2K
        Si8 labels: a constant 9 meV/atom after 400 steps; the demo's se_e2_a student on its 725
        teacher frames: 8.2 meV/atom after 12000 steps, 0.9 after the re-fit, forces unchanged).
    device: "auto" (deepmd-kit uses CUDA when torch sees a GPU) or "cpu" (GPUs hidden from the
        ``dp`` subprocesses).
    n_threads: CPU threads for ``dp`` (OMP / deepmd intra-op) and in-process inference;
        ``None`` leaves the environment alone.

    Raises
    ------
    ValueError: (at construction) unknown template, ``numb_steps < 1``, non-positive learning
        rates, ``rcut <= rcut_smth``, a bad ``batch_size``/``sel``/``device``.
    """

    template: str = "se_e2_a"
    type_map: list[str] | None = None
    base_model: str | None = None
    model_branch: str | None = None
    numb_steps: int = 1000
    steps_per_frame: float | None = None
    batch_size: int | str = "auto"
    start_lr: float = 1e-3
    stop_lr: float = 1e-5
    rcut: float | None = None
    rcut_smth: float | None = None
    sel: int | str = "auto"
    seed: int = 1
    disp_freq: int | None = None
    save_freq: int | None = None
    input_overrides: dict[str, Any] = field(default_factory=dict)
    use_virial: bool = True
    energy_weight: float = 1.0
    compress: bool | None = None
    compile: bool = False
    refit_bias: bool = True
    device: str = "auto"
    n_threads: int | None = None

    name = "deepmd"

    def __post_init__(self) -> None:
        """Check every setting before any job exists."""
        if self.template not in TEMPLATES:
            raise ValueError(f"DeepMDBackend.template must be one of {list(TEMPLATES)}, got {self.template!r}")
        if int(self.numb_steps) != self.numb_steps or self.numb_steps < 1:
            raise ValueError(f"DeepMDBackend.numb_steps must be an integer >= 1, got {self.numb_steps!r}")
        if self.steps_per_frame is not None and not self.steps_per_frame > 0:
            raise ValueError(f"DeepMDBackend.steps_per_frame must be > 0 or None, got {self.steps_per_frame!r}")
        for key in ("start_lr", "stop_lr", "energy_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"DeepMDBackend.{key} must be a number > 0, got {value!r}")
        default_rcut, default_smth = DEFAULT_CUTOFFS[self.template]
        rcut = default_rcut if self.rcut is None else self.rcut
        smth = default_smth if self.rcut_smth is None else self.rcut_smth
        if not 0 <= smth < rcut:
            raise ValueError(f"DeepMDBackend needs 0 <= rcut_smth < rcut (Å), got rcut={rcut}, rcut_smth={smth}")
        if not _is_batch_size(self.batch_size):
            raise ValueError(f"DeepMDBackend.batch_size must be an integer >= 1, 'auto' or 'auto:N', got {self.batch_size!r}")
        if not (self.sel == "auto" or (isinstance(self.sel, int) and self.sel >= 1)):
            raise ValueError(f"DeepMDBackend.sel must be 'auto' or an integer >= 1, got {self.sel!r}")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"DeepMDBackend.device must be 'auto' or 'cpu', got {self.device!r}")
        if self.n_threads is not None and (int(self.n_threads) != self.n_threads or self.n_threads < 1):
            raise ValueError(f"DeepMDBackend.n_threads must be an integer >= 1 or None, got {self.n_threads!r}")
        if self.base_model is not None and not isinstance(self.base_model, str):
            self.base_model = str(self.base_model)

    # ------------------------------------------------------------------ starting model

    def base_model_path(self) -> Path | None:
        """Local path of :attr:`base_model` (registry names are fetched into the cache if missing).

        Raises
        ------
        FileNotFoundError: a path that does not exist.
        ConnectionError, ValueError: a registered model cannot be fetched or fails its SHA-256 check.
        """
        return None if self.base_model is None else foundation.resolve(self.base_model)

    def _starting_type_map(self, init_model: ModelFile | None) -> list[str] | None:
        """Type map of the model training starts from (``None`` when training from scratch)."""
        if init_model is not None:
            self._require_deepmd(init_model)
            return list(init_model.type_map) or read_type_map(init_model.materialize())
        if self.base_model is not None:
            return read_type_map(self.base_model_path(), self.model_branch)
        return None

    def check_elements(self, elements: Sequence[str], model: ModelFile | None = None) -> None:
        """Check that a model can handle ``elements``.

        The model is ``model`` if given (its type map), else :attr:`base_model` (the elements it
        saw in training when the checkpoint records them, ``info.observed_type``, else its type
        map), else (training from scratch) :attr:`type_map` if set; with none of them every
        element is accepted.

        Raises
        ------
        ValueError: naming the elements the model cannot handle and the ones it can.
        FileNotFoundError: :attr:`base_model` does not exist.
        """
        if model is not None:
            known, which = self._starting_type_map(model), f"the type map of model {model.filename}"
        elif self.base_model is not None:
            params = _branch_params(self.base_model_path(), self.model_branch)  # one load of the checkpoint
            if observed := (params.get("info") or {}).get("observed_type"):
                known, which = observed, f"the elements foundation model {self.base_model} saw in training"
            else:
                known, which = params["type_map"], f"the type map of base model {self.base_model}"
        else:
            known, which = self.type_map, "type_map"
        if known is None:
            return
        missing = sorted(set(elements) - set(known))
        if missing:
            raise ValueError(f"elements {missing} are not among {which}: {list(known)}")

    @staticmethod
    def _require_deepmd(model: ModelFile) -> None:
        if model.backend != "deepmd":
            raise ValueError(f"model {model.filename} is a {model.backend!r} model, not a deepmd one")

    def _starting_checkpoint(self, init_model: ModelFile | None, workdir: Path) -> Path | None:
        """Checkpoint path for ``--finetune`` of the model training starts from (``None``: from scratch)."""
        if init_model is not None:
            start = init_model.materialize(workdir / "init_model")
        elif self.base_model is not None:
            start = self.base_model_path()
        else:
            return None
        if start.suffix == ".pth":  # --finetune reads checkpoints only
            start = checkpoint_from_frozen(start, workdir / "init_model" / "from_frozen.pt")
        return start

    def _lineage(self, init_model: ModelFile | None) -> tuple[str | None, str | None]:
        """(parent sha256, head) of the model training starts from; ``(None, None)`` from scratch."""
        if init_model is not None:
            return init_model.sha256, init_model.head
        if self.base_model is not None:
            return sha256_of_file(self.base_model_path()), self.model_branch
        return None, None

    # ------------------------------------------------------------------ training

    def model_definition(self, start: Path | None, init_model: ModelFile | None) -> dict[str, Any] | None:
        """The ``model`` section of ``input.json`` without its ``type_map``; ``None`` keeps the template's
        (training from scratch). Subclasses may return another architecture.

        For fine-tuning it is the starting model's own definition: ``--use-pretrain-script`` takes the
        descriptor and fitting net from the checkpoint, but the model ``type`` (``"dpa4"``: its fitting net
        ``dpa4_ener`` is unknown to the standard model) must come from the input, so the whole definition is
        written.

        Parameters
        ----------
        start: checkpoint training starts from (``None``: from scratch).
        init_model: the model it was materialized from, if any (else :attr:`base_model`).
        """
        if start is None:
            return None
        branch = None if init_model is not None else self.model_branch
        params = copy.deepcopy(_branch_params(start, branch))
        if "use_compile" in params:
            params["use_compile"] = bool(self.compile)
        return params

    def write_inputs(
        self,
        datasets: Sequence[Dataset],
        workdir: str | Path,
        init_model: ModelFile | None = None,
        weights: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Validate the data and write the deepmd/npy systems and ``input.json`` into ``workdir``.

        Empty datasets are skipped (with their weights). Arguments as in :meth:`train`.

        Returns
        -------
        the input.json contents.

        Raises
        ------
        ValueError: no frames, unlabelled frames, bad weights, or elements missing from the
            type map / starting model.
        FileNotFoundError: :attr:`base_model` does not exist (and no ``init_model`` is given).
        """
        kept, type_map, start = self._check_inputs(datasets, workdir, init_model, weights)
        return self._write_config(kept, type_map, start, init_model, Path(workdir))

    def _check_inputs(
        self,
        datasets: Sequence[Dataset],
        workdir: str | Path,
        init_model: ModelFile | None,
        weights: Sequence[float] | None,
    ) -> tuple[list[tuple[Dataset, float]], list[str], Path | None]:
        """Check the data against the type maps; return the non-empty (dataset, weight) pairs, the type map and
        the starting checkpoint (``None``: from scratch). Raises as :meth:`write_inputs`."""
        datasets = self.check_training_data(datasets, weights)
        # base_model is not used (and need not exist on this worker) when restarting from init_model
        if init_model is None and self.base_model is not None:
            self.base_model_path()
        if weights is None:
            weights = [1.0] * len(datasets)
        kept = [(d, w) for d, w in zip(datasets, weights, strict=True) if len(d) > 0]
        elements = sorted({e for d, _ in kept for e in d.elements})
        start_map = self._starting_type_map(init_model)
        if start_map is not None and (missing := sorted(set(elements) - set(start_map))):
            which = f"model {init_model.filename}" if init_model is not None else f"base model {self.base_model}"
            raise ValueError(f"elements {missing} are not in the type map {start_map} of the {which}")
        if self.type_map is not None:
            if missing := sorted(set(elements) - set(self.type_map)):
                raise ValueError(f"elements {missing} of the data are not in type_map {self.type_map}")
            if start_map is not None and (extra := sorted(set(self.type_map) - set(start_map))):
                raise ValueError(
                    f"type_map {self.type_map} has elements {extra} "
                    f"that the starting model (type map {start_map}) lacks"
                )
        type_map = list(self.type_map or start_map or elements)
        # built after every check: rebuilding a checkpoint from a frozen model takes seconds
        start = self._starting_checkpoint(init_model, Path(workdir))
        return kept, type_map, start

    def _write_config(
        self,
        kept: Sequence[tuple[Dataset, float]],
        type_map: list[str],
        start: Path | None,
        init_model: ModelFile | None,
        workdir: Path,
    ) -> dict[str, Any]:
        """Write the deepmd/npy systems and ``input.json`` of checked data (see :meth:`_check_inputs`)."""
        # virials only when every frame has one: dpdata cannot mix frames with and without
        with_virial = self.use_virial and all(f.virial is not None for d, _ in kept for f in d)
        if self.use_virial and not with_virial:
            logger.info("some frames have no virial (non-periodic or unlabelled stress): training without virial")

        data_root = workdir / "data"
        if data_root.exists():
            shutil.rmtree(data_root)  # stale systems of an earlier attempt would be trained on
        systems: list[str] = []
        n_systems: list[int] = []
        for i, (dataset, _) in enumerate(kept):
            if not with_virial:
                dataset = Dataset(frames=[f.model_copy(update={"virial": None}) for f in dataset])
            target = data_root / f"{i:03d}"
            multi = dataset.to_dpdata(type_map=type_map)
            multi.to_deepmd_npy(str(target))
            names = sorted(p.name for p in target.iterdir() if p.is_dir())
            systems += [str(Path("data") / f"{i:03d}" / n) for n in names]
            n_systems.append(len(names))

        numb_steps = self.training_steps(sum(len(d) for d, _ in kept))
        config = build_input(
            self.template,
            type_map=type_map,
            systems=systems,
            auto_prob=auto_prob_from_weights(n_systems, [w for _, w in kept]),
            numb_steps=numb_steps,
            batch_size=self.batch_size,
            start_lr=self.start_lr,
            stop_lr=self.stop_lr,
            rcut=self.rcut,
            rcut_smth=self.rcut_smth,
            sel=self.sel,
            seed=self.seed,
            disp_freq=self.disp_freq or max(1, numb_steps // 10),
            save_freq=self.save_freq or default_save_freq(numb_steps),
            use_virial=with_virial,
            energy_weight=self.energy_weight,
        )
        if (model := self.model_definition(start, init_model)) is not None:
            config["model"] = model | {"type_map": type_map}
        merge_overrides(config, self.input_overrides, seed=self.seed)  # dicts merge; a section of another type replaces
        (workdir / "input.json").write_text(json.dumps(config, indent=2))
        return config

    @property
    def cutoff(self) -> float | None:
        """The descriptor's cutoff radius (Å) when training from scratch: :attr:`rcut` (or the template's),
        unless :attr:`input_overrides` sets another (for a ``hybrid``, the largest of its parts). ``None``
        when fine-tuning a :attr:`base_model` (its architecture is the pre-trained one)."""
        if self.base_model is not None:
            return None
        return trained_cutoff(self.template, self.rcut, self.rcut_smth, self.input_overrides)

    def training_steps(self, n_frames: int) -> int:
        """Steps of a training on ``n_frames`` frames (see :attr:`steps_per_frame`)."""
        if self.steps_per_frame is None:
            return int(self.numb_steps)
        return max(int(self.numb_steps), math.ceil(self.steps_per_frame * n_frames))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.n_threads is not None:
            n = str(int(self.n_threads))
            env.update(
                OMP_NUM_THREADS=n, DP_INTRA_OP_PARALLELISM_THREADS=n, DP_INTER_OP_PARALLELISM_THREADS="1"
            )
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    @property
    def memory_per_atom_gib(self) -> tuple[float, float]:
        """Measured peaks of one energy/forces/stress call on the CPU (diamond Si): DPA-4 0.9 GiB at
        64 atoms, 3.2 at 512, 9.6 at 1728; the se_e2_a student 1.3 GiB at 64 and 1.4 at 4096
        (6.1 at 13,824)."""
        if self.base_model is not None:
            return (0.5, 0.0053)  # DPA-4 measured; other foundation models taken alike
        return (1.2, 0.00035)

    def frames_per_batch(self, n_atoms: int) -> int:
        """Frames per training step: :attr:`batch_size`, or deepmd's "auto:N" rule (ceil(N / n_atoms))."""
        if isinstance(self.batch_size, int):
            return self.batch_size
        target = int(self.batch_size.split(":")[1]) if ":" in self.batch_size else 32
        return max(1, math.ceil(target / max(1, n_atoms)))

    def _run_dp(self, args: Sequence[str], workdir: Path, log_name: str) -> None:
        """Run ``dp --pt <args>`` in ``workdir``; raise RuntimeError with the log tail on failure."""
        log_path = workdir / log_name
        cmd = [sys.executable, "-m", "deepmd", "--pt", *args]
        logger.info("running %s in %s", " ".join(cmd[2:]), workdir)
        with log_path.open("w") as log:
            # a killed worker or script takes its dp child along (an orphaned `dp train` trains on for hours)
            proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                  preexec_fn=die_with_parent(signal.SIGKILL))
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
            raise RuntimeError(f"`dp --pt {' '.join(args)}` failed (exit {proc.returncode}) in {workdir}:\n{tail}")

    def train(
        self,
        datasets: Sequence[Dataset],
        workdir: str | Path,
        init_model: ModelFile | None = None,
        weights: Sequence[float] | None = None,
    ) -> ModelFile:
        """Train (fine-tune or from scratch) and return the model.

        Parameters
        ----------
        datasets: labelled datasets (Å, eV, eV/Å, virial eV); all are trained on.
        workdir: scratch directory (created); holds data/, input.json, dp_train.log,
            lcurve.out, checkpoints and the model file.
        init_model: deepmd model to fine-tune from instead of :attr:`base_model` (restart
            from the previous iteration's model M_i); a frozen ``.pth`` is rebuilt into a
            checkpoint first.
        weights: relative sampling weight per dataset (e.g. favour new data over old);
            becomes deepmd's ``auto_prob = "prob_sys_size;0:n0:w0;n0:n1:w1;..."``.

        Returns
        -------
        ModelFile with backend "deepmd", its type map, kind "finetuned" (from ``init_model`` or
        ``base_model``) or "scratch", and the parent's sha256: the frozen ``frozen_model.pth``,
        or for descriptors that cannot be scripted (DPA-4) the weights-only checkpoint
        ``model.pt``. Not compressed: see :meth:`compress_model`.

        Raises
        ------
        ValueError: no frames, unlabelled frames, bad weights, elements missing from the
            starting model, wrong backend of ``init_model``.
        FileNotFoundError: :attr:`base_model` does not exist.
        RuntimeError: ``dp`` failed (message carries the tail of its log).
        """
        workdir = Path(workdir).resolve()  # dp runs inside workdir: every path handed to it must be absolute
        workdir.mkdir(parents=True, exist_ok=True)
        if init_model is not None:
            self._require_deepmd(init_model)
        earlier = checkpoints.stored_fingerprint(workdir)  # read before write_inputs replaces the inputs
        kept, type_map, start = self._check_inputs(datasets, workdir, init_model, weights)
        config = self._write_config(kept, type_map, start, init_model, workdir)
        numb_steps = config["training"]["numb_steps"]
        parent_sha, head = self._lineage(init_model)

        fingerprint = checkpoints.training_fingerprint(workdir, parent_sha, head)
        resume = checkpoints.latest_checkpoint(workdir) if earlier == fingerprint else None
        if resume is None:
            checkpoints.clear_checkpoints(workdir)
        checkpoints.store_fingerprint(workdir, fingerprint)
        checkpoints.record_resume(workdir, None if resume is None else resume[1], numb_steps)

        if resume is not None and resume[1] >= numb_steps:  # trained to the end, stopped before freezing
            logger.info("training in %s already reached step %d: not run again", workdir, resume[1])
            checkpoint = resume[0]
        else:
            args = ["train", "input.json"]
            if resume is not None:  # the checkpoint holds the fine-tuned weights: no --finetune again
                logger.info("continuing the training in %s from step %d of %d", workdir, resume[1], numb_steps)
                args += ["--restart", resume[0].name]
            elif start is not None:
                if init_model is None and self.model_branch:
                    args += ["--model-branch", self.model_branch]
                args += ["--finetune", str(start), "--use-pretrain-script"]
            self._run_dp(args, workdir, _LOG_NAME)
            speed = re.findall(r"average training time: ([0-9.eE+-]+) s/batch", (workdir / _LOG_NAME).read_text())
            if speed:
                logger.info("deepmd training: %s s/step over %d steps", speed[-1], numb_steps)
            checkpoint = workdir / "model.ckpt.pt"
        if self.refit_bias:
            self._run_dp(["change-bias", checkpoint.name, "-s", "data", "-n", "0", "-m", "change",
                          "-o", "model_refit.pt"], workdir, "dp_change_bias.log")
            checkpoint = workdir / "model_refit.pt"
        if descriptor_type(config["model"]) in UNSCRIPTABLE_DESCRIPTORS:
            path = strip_checkpoint(checkpoint, workdir / _CHECKPOINT_NAME)
        else:
            self._run_dp(["freeze", "-c", checkpoint.name, "-o", _FROZEN_NAME], workdir, "dp_freeze.log")
            path = workdir / _FROZEN_NAME
        return ModelFile.from_path(
            path,
            backend=self.name,
            type_map=read_type_map(path),
            kind="scratch" if start is None else "finetuned",
            parent_sha256=parent_sha,
            head=head,
        )

    def resumed_from_step(self, workdir: str | Path) -> int | None:
        """The checkpoint step the last :meth:`train` in ``workdir`` continued from (``None``: from step 0)."""
        return checkpoints.resumed_from_step(workdir)

    def compress_model(self, model: ModelFile, workdir: str | Path) -> ModelFile | None:
        """``dp --pt compress`` a frozen model (PFD's student is compressed after freezing).

        Parameters
        ----------
        model: a frozen ``.pth`` of this backend (as returned by :meth:`train`).
        workdir: the training folder (its ``input.json`` gives the data for neighbour statistics
            when the model has none stored).

        Returns
        -------
        The compressed model (kind and lineage of ``model``, ``compressed_from_sha256`` set), or
        ``None`` when compression is off or the descriptor does not support it.

        Raises
        ------
        RuntimeError: ``dp --pt compress`` failed (message carries the tail of its log).
        """
        self._require_deepmd(model)
        if self.compress is False or not model.filename.endswith(".pth"):
            return None
        params = _load_model_params(model.materialize())
        if not can_compress(params):
            if self.compress:
                logger.warning("descriptor %s cannot be compressed; keeping the frozen model", descriptor_type(params))
            return None
        workdir = Path(workdir).resolve()
        frozen = model.materialize(workdir / "uncompressed")
        args = ["compress", "-i", str(frozen), "-o", _COMPRESSED_NAME]
        if (workdir / "input.json").is_file():
            args += ["-t", "input.json"]
        self._run_dp(args, workdir, "dp_compress.log")
        return ModelFile.from_path(
            workdir / _COMPRESSED_NAME,
            backend=self.name,
            type_map=list(model.type_map),
            kind=model.kind,
            parent_sha256=model.parent_sha256,
            head=model.head,
            compressed_from_sha256=model.sha256,
        )

    # ------------------------------------------------------------------ inference

    def calculator(self, model: ModelFile):
        """ASE calculator ``deepmd.calculator.DP`` for ``model`` (materialized into the model cache),
        one per model in this process (loading DPA-4 takes 7 s)."""
        self._require_deepmd(model)
        return _dp_calculator(model.sha256, str(model.materialize()))

    def force_field_spec(self, model: ModelFile) -> tuple[str, dict[str, Any]]:
        """``("DeepMD", {"model": path})`` for atomate2's ``ForceFieldMDMaker`` (``MLFF.DeepMD``).

        The model is materialized into the local model cache; the path is valid on this machine.
        """
        self._require_deepmd(model)
        return "DeepMD", {"model": str(model.materialize())}


def default_save_freq(numb_steps: int) -> int:
    """Steps between checkpoints when :attr:`DeepMDBackend.save_freq` is not set: a twentieth of the training,
    at least 1000 steps (each write pauses the training) and at most ``numb_steps``; the
    default student's 192000 steps keep one every 9600 (about 7 min on one CPU thread)."""
    return min(int(numb_steps), max(1000, int(numb_steps) // 20))


def _is_batch_size(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, str) and bool(re.fullmatch(r"auto(:[1-9][0-9]*)?", value))
