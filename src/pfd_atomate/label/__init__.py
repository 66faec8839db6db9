"""Label step: energies, forces and virials for frames through atomate2's own static jobs."""

from pfd_atomate.compat import atomate2 as _atomate2_compat
from pfd_atomate.label.adapters import LabelError
from pfd_atomate.label.cp2k import cp2k_static_maker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.label.schemas import FailedLabel, LabelOutput

_atomate2_compat.apply()  # parse spin-restricted CP2K labels (atomate2 <= 0.1.5)

__all__ = ["FailedLabel", "LabelError", "LabelMaker", "LabelOutput", "cp2k_static_maker"]
