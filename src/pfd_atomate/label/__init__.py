"""Label step: energies, forces and virials for frames through atomate2's own static jobs."""

from pfd_atomate.label.adapters import LabelError, labels_from_task_doc
from pfd_atomate.label.cp2k import cp2k_static_maker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.label.schemas import FailedLabel, LabelOutput

__all__ = ["FailedLabel", "LabelError", "LabelMaker", "LabelOutput", "cp2k_static_maker", "labels_from_task_doc"]
