"""deepmd-kit (PyTorch backend) trainer: fine-tune a DPA-2-style foundation model or train from scratch.

Training runs ``dp --pt train`` and ``dp --pt freeze`` as subprocesses in a work directory;
the result is the frozen TorchScript model (``.pth``) as a :class:`ModelFile`. Inference
(:meth:`DeepMDBackend.predict`, :meth:`DeepMDBackend.calculator`) runs in-process through
``deepmd.infer.DeepPot`` / ``deepmd.calculator.DP``.

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

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfd_atomate.data import Dataset, ModelFile
from pfd_atomate.train.base import TrainerBackend
from pfd_atomate.train.deepmd_templates import TEMPLATES, auto_prob_from_weights, build_input

logger = logging.getLogger(__name__)

_FROZEN_NAME = "frozen_model.pth"
_LOG_NAME = "dp_train.log"
_LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- model files


def _load_model_params(path: Path) -> dict[str, Any]:
    """Model definition (the ``model`` section of input.json) stored in a checkpoint or frozen model."""
    import torch

    import deepmd.pt.cxx_op  # noqa: F401  (registers deepmd's TorchScript ops before jit.load)

    if path.suffix == ".pth":
        return json.loads(torch.jit.load(str(path), map_location="cpu").get_model_def_script())
    if path.suffix == ".pt":
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("model", state)
        return state["_extra_state"]["model_params"]
    raise ValueError(f"{path}: not a deepmd-kit PyTorch model (expected a .pt checkpoint or a frozen .pth)")


def _branch_params(params: dict[str, Any], model_branch: str | None, path: Path) -> dict[str, Any]:
    """Parameters of one branch of a (possibly multi-task) model definition."""
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"deepmd model file not found: {path}")
    return list(_branch_params(_load_model_params(path), model_branch, path)["type_map"])


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


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# loaded DeepPot objects by model sha256; a few models are enough (teacher/student per iteration)
_DEEPPOT_CACHE: OrderedDict[str, Any] = OrderedDict()
_DEEPPOT_CACHE_SIZE = 4


def _deeppot(model: ModelFile):
    key = model.sha256
    if key in _DEEPPOT_CACHE:
        _DEEPPOT_CACHE.move_to_end(key)
        return _DEEPPOT_CACHE[key]
    from deepmd.infer import DeepPot

    dp = DeepPot(str(model.materialize()))
    _DEEPPOT_CACHE[key] = dp
    while len(_DEEPPOT_CACHE) > _DEEPPOT_CACHE_SIZE:
        _DEEPPOT_CACHE.popitem(last=False)
    return dp


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
        scratch) or the starting model's type map (fine-tuning).
    base_model: pretrained checkpoint (``.pt``) or frozen model (``.pth``) to fine-tune;
        ``None`` trains from scratch.
    model_branch: model branch (head) of a multi-task ``base_model`` (``--model-branch``).
    numb_steps: training steps.
    batch_size: frames per step, or "auto" / "auto:N" (deepmd: at least N atoms per batch).
    start_lr, stop_lr: learning rate at the first and last step (exponential decay).
    rcut, rcut_smth: cut-off radius and smoothing start, Å (``None``: template default, 6.0/0.5).
    sel: max neighbours per type or "auto" (from neighbour statistics of the data).
    seed: seed of initialisation and batch sampling.
    disp_freq, save_freq: steps between learning-curve lines / checkpoints (``None``: auto).
    input_overrides: deep-merged into the generated input.json last (any deepmd key).
    use_virial: train on the virial when every frame has one (default). Frames of several
        volumes need it: without it a student distilled from NPT frames missed the teacher's
        energies by 69 meV/atom, with it by 3.6 meV/atom at the same 3000 steps (Si8,
        see docs/demo.md).
    n_threads: CPU threads for ``dp`` (OMP / deepmd intra-op) and in-process inference;
        ``None`` leaves the environment alone.
    """

    template: str = "se_e2_a"
    type_map: list[str] | None = None
    base_model: str | None = None
    model_branch: str | None = None
    numb_steps: int = 1000
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
    n_threads: int | None = None

    name = "deepmd"

    # ------------------------------------------------------------------ element checks

    def _starting_type_map(self, init_model: ModelFile | None) -> list[str] | None:
        """Type map of the model training starts from (``None`` when training from scratch)."""
        if init_model is not None:
            self._require_deepmd(init_model)
            return list(init_model.type_map) or read_type_map(init_model.materialize())
        if self.base_model is not None:
            return read_type_map(self.base_model, self.model_branch)
        return None

    def check_elements(self, elements: Sequence[str], model: ModelFile | None = None) -> None:
        """Check that a model can handle ``elements``.

        The model is ``model`` if given, else :attr:`base_model`, else (training from
        scratch) :attr:`type_map` if set; with none of them every element is accepted.

        Raises
        ------
        ValueError: naming the elements missing from the model's type map.
        FileNotFoundError: :attr:`base_model` does not exist.
        """
        known = self._starting_type_map(model)
        if known is None:
            known = self.type_map
        if known is None:
            return
        missing = sorted(set(elements) - set(known))
        if missing:
            which = (
                f"model {model.filename}" if model is not None
                else f"base model {self.base_model}" if self.base_model is not None
                else "type_map"
            )
            raise ValueError(f"elements {missing} are not in the type map {list(known)} of the {which}")

    @staticmethod
    def _require_deepmd(model: ModelFile) -> None:
        if model.backend != "deepmd":
            raise ValueError(f"model {model.filename} is a {model.backend!r} model, not a deepmd one")

    # ------------------------------------------------------------------ training

    def _validate(
        self, datasets: Sequence[Dataset], weights: Sequence[float] | None, init_model: ModelFile | None
    ) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown deepmd template {self.template!r}; choose one of {TEMPLATES}")
        if self.numb_steps < 1:
            raise ValueError(f"numb_steps must be >= 1, got {self.numb_steps}")
        if weights is not None and len(weights) != len(datasets):
            raise ValueError(f"{len(weights)} weights given for {len(datasets)} datasets")
        if weights is not None and any(not w > 0 for w in weights):
            raise ValueError(f"dataset weights must be > 0, got {list(weights)}")
        if sum(len(d) for d in datasets) == 0:
            raise ValueError("no frames to train on: every dataset is empty")
        for d in datasets:
            d._require_labels()
        # base_model is not used (and need not exist on this worker) when restarting from init_model
        if init_model is None and self.base_model is not None and not Path(self.base_model).is_file():
            raise FileNotFoundError(f"base model not found: {self.base_model}")

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
        ValueError: no frames, unlabelled frames, bad weights, unknown template, or
            elements missing from the type map / starting model.
        FileNotFoundError: :attr:`base_model` does not exist (and no ``init_model`` is given).
        """
        datasets = list(datasets)
        self._validate(datasets, weights, init_model)
        if weights is None:
            weights = [1.0] * len(datasets)
        kept = [(d, w) for d, w in zip(datasets, weights, strict=True) if len(d) > 0]
        elements = sorted({e for d, _ in kept for e in d.elements})

        start_map = self._starting_type_map(init_model)
        if start_map is not None and set(elements) - set(start_map):
            which = f"model {init_model.filename}" if init_model is not None else f"base model {self.base_model}"
            raise ValueError(
                f"elements {sorted(set(elements) - set(start_map))} are not in the type map {start_map} of the {which}"
            )
        if self.type_map is not None:
            missing = sorted(set(elements) - set(self.type_map))
            if missing:
                raise ValueError(f"elements {missing} of the data are not in type_map {self.type_map}")
            if start_map is not None and set(self.type_map) - set(start_map):
                raise ValueError(
                    f"type_map {self.type_map} has elements {sorted(set(self.type_map) - set(start_map))} "
                    f"that the starting model (type map {start_map}) lacks"
                )
        type_map = list(self.type_map or start_map or elements)

        # virials only when every frame has one: dpdata cannot mix frames with and without
        with_virial = self.use_virial and all(f.virial is not None for d, _ in kept for f in d)
        if self.use_virial and not with_virial:
            logger.info("some frames have no virial (non-periodic or unlabelled stress): training without virial")

        workdir = Path(workdir)
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

        config = build_input(
            self.template,
            type_map=type_map,
            systems=systems,
            auto_prob=auto_prob_from_weights(n_systems, [w for _, w in kept]),
            numb_steps=self.numb_steps,
            batch_size=self.batch_size,
            start_lr=self.start_lr,
            stop_lr=self.stop_lr,
            rcut=self.rcut,
            rcut_smth=self.rcut_smth,
            sel=self.sel,
            seed=self.seed,
            disp_freq=self.disp_freq or max(1, self.numb_steps // 10),
            save_freq=self.save_freq or self.numb_steps,
            use_virial=with_virial,
            overrides=self.input_overrides,
        )
        (workdir / "input.json").write_text(json.dumps(config, indent=2))
        return config

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.n_threads is not None:
            n = str(int(self.n_threads))
            env.update(
                OMP_NUM_THREADS=n, DP_INTRA_OP_PARALLELISM_THREADS=n, DP_INTER_OP_PARALLELISM_THREADS="1"
            )
        return env

    def _run_dp(self, args: Sequence[str], workdir: Path, log_name: str) -> None:
        """Run ``dp --pt <args>`` in ``workdir``; raise RuntimeError with the log tail on failure."""
        log_path = workdir / log_name
        cmd = [sys.executable, "-m", "deepmd", "--pt", *args]
        logger.info("running %s in %s", " ".join(cmd[2:]), workdir)
        with log_path.open("w") as log:
            proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=self._env())
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
        """Train (fine-tune or from scratch) and return the frozen model.

        Parameters
        ----------
        datasets: labelled datasets (Å, eV, eV/Å, virial eV); all are trained on.
        workdir: scratch directory (created); holds data/, input.json, dp_train.log,
            lcurve.out, checkpoints and ``frozen_model.pth``.
        init_model: deepmd model to fine-tune from instead of :attr:`base_model` (restart
            from the previous iteration's model M_i); a frozen ``.pth`` is rebuilt into a
            checkpoint first.
        weights: relative sampling weight per dataset (e.g. favour new data over old);
            becomes deepmd's ``auto_prob = "prob_sys_size;0:n0:w0;n0:n1:w1;..."``.

        Returns
        -------
        ModelFile of the frozen ``.pth`` with backend "deepmd", its type map, kind
        "finetuned" (from ``init_model`` or ``base_model``) or "scratch", and the parent's
        sha256.

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
        self.write_inputs(datasets, workdir, init_model=init_model, weights=weights)

        args = ["train", "input.json"]
        parent_sha = head = None
        if init_model is not None:
            start = init_model.materialize(workdir / "init_model")
            parent_sha, head = init_model.sha256, init_model.head
        elif self.base_model is not None:
            start = Path(self.base_model).resolve()
            parent_sha, head = _sha256_of(start), self.model_branch
            if self.model_branch:
                args += ["--model-branch", self.model_branch]
        else:
            start = None
        if start is not None:
            if start.suffix == ".pth":
                start = checkpoint_from_frozen(start, workdir / "init_model" / "from_frozen.pt")
            args += ["--finetune", str(start), "--use-pretrain-script"]

        self._run_dp(args, workdir, _LOG_NAME)
        speed = re.findall(r"average training time: ([0-9.eE+-]+) s/batch", (workdir / _LOG_NAME).read_text())
        if speed:
            logger.info("deepmd training: %s s/step over %d steps", speed[-1], self.numb_steps)
        self._run_dp(["freeze", "-o", _FROZEN_NAME], workdir, "dp_freeze.log")

        frozen = workdir / _FROZEN_NAME
        return ModelFile.from_path(
            frozen,
            backend=self.name,
            type_map=read_type_map(frozen),
            kind="scratch" if start is None else "finetuned",
            parent_sha256=parent_sha,
            head=head,
        )

    # ------------------------------------------------------------------ inference

    def predict(self, model: ModelFile, dataset: Dataset) -> Dataset:
        """Label ``dataset`` with the model's energy (eV), forces (eV/Å) and virial (eV).

        Frames with the same species sequence are evaluated as one batch. Loaded models
        are cached by sha256, so repeated calls only pay for evaluation.

        Returns
        -------
        Dataset with the same frames (order, name, source) and predicted labels; the
        virial is set for periodic frames only.

        Raises
        ------
        ValueError: ``model`` is not a deepmd model, an element is missing from its type
            map, or a frame is periodic along some but not all cell vectors.
        """
        self._require_deepmd(model)
        if len(dataset) == 0:
            return Dataset(frames=[], name=dataset.name)
        if self.n_threads is not None:
            import torch

            torch.set_num_threads(int(self.n_threads))
        dp = _deeppot(model)
        type_map = dp.get_type_map()
        missing = sorted(set(dataset.elements) - set(type_map))
        if missing:
            raise ValueError(f"elements {missing} are not in the type map {type_map} of model {model.filename}")
        index = {e: i for i, e in enumerate(type_map)}

        groups: dict[tuple, list[int]] = {}
        for i, frame in enumerate(dataset):
            if len(set(frame.pbc)) != 1:
                raise ValueError(f"frame {i}: deepmd needs full or no periodicity, got pbc={frame.pbc}")
            groups.setdefault((tuple(frame.species), frame.pbc[0]), []).append(i)

        frames = list(dataset.frames)
        for (species, periodic), idx in groups.items():
            coords = np.array([dataset[i].positions for i in idx], dtype=float).reshape(len(idx), -1)
            cells = np.array([dataset[i].cell for i in idx], dtype=float).reshape(len(idx), 9) if periodic else None
            energy, forces, virial = dp.eval(coords, cells, [index[s] for s in species])[:3]
            for k, i in enumerate(idx):
                frames[i] = frames[i].model_copy(
                    update={
                        "energy": float(energy[k, 0]),
                        "forces": forces[k].reshape(-1, 3).tolist(),
                        "virial": virial[k].reshape(3, 3).tolist() if periodic else None,
                    }
                )
        return Dataset(frames=frames, name=dataset.name)

    def calculator(self, model: ModelFile):
        """ASE calculator ``deepmd.calculator.DP`` for ``model`` (materialized into the model cache)."""
        self._require_deepmd(model)
        from deepmd.calculator import DP

        return DP(model=str(model.materialize()))

    def force_field_spec(self, model: ModelFile) -> tuple[str, dict[str, Any]]:
        """``("DeepMD", {"model": path})`` for atomate2's ``ForceFieldMDMaker`` (``MLFF.DeepMD``).

        The model is materialized into the local model cache; the path is valid on this machine.
        """
        self._require_deepmd(model)
        return "DeepMD", {"model": str(model.materialize())}
