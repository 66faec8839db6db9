"""pfd-atomate: PFD (pre-trained universal model -> fine-tune -> distill) force fields as atomate2/jobflow Makers.

What a user composes is importable from here::

    from pfd_atomate import PFDMaker, LabelMaker, cp2k_static_maker, run_flow

    flow = PFDMaker(label=LabelMaker(static_maker=cp2k_static_maker())).make(structure)
    run_flow(flow, "runs/my-run", workers=2)

Names are imported on first use, so ``import pfd_atomate`` stays cheap (no torch) for tools that
only need a submodule.
"""

from __future__ import annotations

import importlib
from typing import Any

from pfd_atomate._version import __version__

#: public name -> module that defines it
_EXPORTS = {
    "PFDMaker": "pfd_atomate.flows",
    "PerturbMaker": "pfd_atomate.perturb.jobs",
    "LabelMaker": "pfd_atomate.label.flows",
    "cp2k_static_maker": "pfd_atomate.label.cp2k",
    "FinetuneMaker": "pfd_atomate.finetune.jobs",
    "SelectMaker": "pfd_atomate.select.jobs",
    "FrameFilter": "pfd_atomate.select.filters",
    "ExploreMaker": "pfd_atomate.explore.jobs",
    "Stage": "pfd_atomate.explore.schemas",
    "TaskGroup": "pfd_atomate.explore.schemas",
    "EvaluateMaker": "pfd_atomate.evaluate.jobs",
    "ConvergenceCriteria": "pfd_atomate.evaluate.schemas",
    "TrustWindow": "pfd_atomate.evaluate.schemas",
    "TrainMaker": "pfd_atomate.train.jobs",
    "DeepMDBackend": "pfd_atomate.train.deepmd",
    "CHGNetBackend": "pfd_atomate.train.chgnet",
    "DistillMaker": "pfd_atomate.distill.flows",
    "Dataset": "pfd_atomate.data",
    "Frame": "pfd_atomate.data",
    "ModelFile": "pfd_atomate.data",
    "PFDOutput": "pfd_atomate.schemas",
    "run_flow": "pfd_atomate.workflows.local",
    "embedded_store": "pfd_atomate.store",
    "load_config": "pfd_atomate.config",
    "presets": "pfd_atomate",
    "queries": "pfd_atomate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pfd_atomate' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module == "pfd_atomate":  # a submodule exported as such
        return importlib.import_module(f"pfd_atomate.{name}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
