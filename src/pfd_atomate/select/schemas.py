"""Output document of the selection job."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset


class SelectOutput(BaseModel):
    """Frames chosen for labelling (``dataset`` lives in the ``data`` store)."""

    dataset: Dataset = Field(description="selected frames, unlabelled")
    method: str = Field(description="'entropy' or 'random'")
    n_candidates: int = Field(description="frames offered by exploration")
    n_after_filter: int = Field(description="frames left after the pre-label filters")
    rejected: dict[str, int] = Field(default_factory=dict, description="frames rejected per filter")
    n_selected: int
    n_selected_per_structure: list[int] | None = Field(
        None, description="frames selected per input structure, in input order (None: one structure, or "
                          "SelectMaker.per_structure off)"
    )
    dh: list[float | None] | None = Field(
        None, description="dH of each pick when picked (entropy selection), nats; None for a first pick without reference"
    )
    reference_entropy: float | None = Field(None, description="QUESTS entropy of the reference data, nats")
    selected_entropy: float | None = Field(None, description="QUESTS entropy of the selected frames, nats")
