"""Output document of the Label step."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset


class FailedLabel(BaseModel):
    """A frame whose label could not be obtained (dropped from the labelled dataset)."""

    index: int = Field(description="position of the frame in the input dataset")
    job_uuid: str = Field(description="uuid of the static job that should have labelled it")
    reason: str = Field(description="why the label is missing or was rejected")


class LabelOutput(BaseModel):
    """Output of a :class:`~pfd_atomate.label.flows.LabelMaker` flow.

    ``dataset`` goes to the JobStore's ``data`` additional store.
    """

    dataset: Dataset = Field(description="labelled frames (energy eV, forces eV/Å, virial eV), in input order")
    indices: list[int] = Field(description="input-dataset position of each labelled frame")
    n_requested: int = Field(description="number of frames sent to the labeller")
    n_labelled: int = Field(description="number of frames labelled (reused labels included)")
    n_reused: int = Field(0, description="labels found in the store (same frame, same labeller settings): not paid again")
    failed: list[FailedLabel] = Field(default_factory=list, description="frames dropped, with reasons")
    labeller: str = Field(description="name (class and job name) of the atomate2 static maker used")

    @property
    def n_paid(self) -> int:
        """Labels computed by this labelling (not reused)."""
        return self.n_labelled - self.n_reused

    @property
    def success_ratio(self) -> float:
        """Fraction of requested frames that were labelled."""
        return self.n_labelled / self.n_requested if self.n_requested else 0.0
