"""Frames, datasets and model files that PFD steps exchange through the JobStore."""

from pfd_atomate.data.frames import Dataset, DatasetSelection, Frame, as_dataset
from pfd_atomate.data.models import ModelFile, as_model_file

__all__ = ["Dataset", "DatasetSelection", "Frame", "ModelFile", "as_dataset", "as_model_file"]
