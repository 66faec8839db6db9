"""Frames, datasets and model files that PFD steps exchange through the JobStore."""

from pfd_atomate.data.frames import Dataset, Frame
from pfd_atomate.data.models import ModelFile

__all__ = ["Dataset", "Frame", "ModelFile"]
