"""CHGNet models as files and as ASE calculators: safe loading, caching, the pretrained checkpoint.

CHGNet 0.3.0's pretrained weights ship inside the ``chgnet`` wheel (offline). A fine-tuned model is a
file of plain tensors and values (``torch.save({"model": model.as_dict()})``), read back with
``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase.calculators.calculator import Calculator, all_changes

from pfd_atomate.train.base import resolve_device

if TYPE_CHECKING:
    from chgnet.model import CHGNet

#: pretrained checkpoint that ``CHGNet.load()`` returns by default
PRETRAINED_VERSION = "0.3.0"
#: the import path atomate2's ``ase_calculator`` resolves (its ``calculator_meta``)
CALCULATOR_PATH = "pfd_atomate.train.chgnet_calculator.FineTunedCHGNetCalculator"


class FineTunedCHGNetCalculator(Calculator):
    """ASE calculator for a CHGNet checkpoint file (or the pretrained CHGNet).

    A thin wrapper of ``chgnet.model.dynamics.CHGNetCalculator`` that takes a file path,
    so atomate2's force-field Makers can build it from plain JSON settings:
    ``force_field_name={"@module": "pfd_atomate.train.chgnet", "@callable":
    "FineTunedCHGNetCalculator"}``, ``calculator_kwargs={"model": "<path>"}`` (see
    :meth:`CHGNetBackend.force_field_spec`). chgnet is imported only when one is built.
    Results: ``energy`` (eV, total), ``forces`` (n_atoms, 3) eV/Å, ``stress`` (3, 3) eV/Å^3
    (ASE sign), ``magmoms`` (n_atoms,) μB.

    Parameters
    ----------
    model: path of a checkpoint that ``CHGNet.from_file`` reads (as written by
        :meth:`CHGNetBackend.train`); ``None`` loads the pretrained CHGNet from the wheel.
    device: torch device, "cpu", "cuda" or "auto" (CUDA when torch sees a GPU).
    n_threads: if given, set torch's intra-op threads for this process (on a shared
        node, more threads than free cores slows CHGNet down many times).
    **kwargs: passed to ``chgnet.model.dynamics.CHGNetCalculator`` (e.g. ``stress_weight``).

    Raises
    ------
    FileNotFoundError: if ``model`` is given and does not exist.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress", "magmoms")

    def __init__(
        self, model: str | Path | None = None, device: str = "auto", n_threads: int | None = None, **kwargs: Any
    ) -> None:
        from chgnet.model.dynamics import CHGNetCalculator

        super().__init__()
        if n_threads:
            import torch

            torch.set_num_threads(n_threads)
        network = None if model is None else load_network(model)
        self._chgnet = CHGNetCalculator(model=network, use_device=resolve_device(device), **kwargs)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        """Compute energy, forces, stress and magnetic moments of ``atoms`` with CHGNet."""
        super().calculate(atoms, properties, system_changes)
        self._chgnet.calculate(self.atoms, properties, system_changes)
        self.results = dict(self._chgnet.results)


def pretrained_checkpoint(version: str = PRETRAINED_VERSION) -> Path | None:
    """Path of the pretrained CHGNet checkpoint inside the chgnet wheel (``None`` if absent)."""
    folder = Path(str(resources.files("chgnet") / "pretrained" / version))
    return min(folder.glob("*.pth.tar"), default=None)  # an absent folder globs nothing




def load_network(path: str | Path | None, quiet: bool = False) -> CHGNet:
    """A fresh CHGNet from a checkpoint file (``None``: pretrained), on the CPU.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain values only.
    chgnet's own ``CHGNet.from_file`` unpickles arbitrary objects (``weights_only=False``), so a
    model file from a store could run code on every worker that loads it.

    Raises
    ------
    FileNotFoundError: ``path`` does not exist.
    ValueError: the file is not a CHGNet checkpoint of plain tensors and values (refused).
    """
    import torch
    from chgnet.model import CHGNet

    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"CHGNet checkpoint not found: {path}")
    sink = contextlib.redirect_stdout(None) if quiet else contextlib.nullcontext()
    with sink:  # chgnet prints a banner per model construction
        if path is None:
            return CHGNet.load(model_name=PRETRAINED_VERSION, use_device="cpu", verbose=False)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            # torch's weights-only unpickler lets any error of malformed bytes through (IndexError, struct.error,
            # UnicodeDecodeError, ...), not only UnpicklingError; all of them mean "not a checkpoint".
            raise ValueError(f"{path} is not a CHGNet checkpoint of plain tensors and values: refused ({err!r})") from err
        try:
            model = state["model"]
            return CHGNet.from_dict({"model_args": model["model_args"], "state_dict": model["state_dict"]})
        except (RuntimeError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"{path} is not a CHGNet checkpoint of plain tensors and values: refused ({err!r})") from err


@functools.lru_cache(maxsize=16)
def check_checkpoint(path: str, mtime: float) -> None:
    """Load a CHGNet checkpoint once per (path, modification time) to prove it is one (see load_network)."""
    load_network(path, quiet=True)

