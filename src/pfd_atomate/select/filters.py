"""Pre-label filters: drop non-physical candidate frames before they are labelled.

PFD paper: candidate frames sampled from MD are screened "with nonphysical configurations
(e.g., large lattice distortions, aggregated atoms, etc.) filtered out by the pre-label
filter". The checks follow the semantics of dpgen2's configuration filters, which PFD-kit
reuses (``DistanceConfFilter``, ``BoxSkewnessConfFilter``, ``BoxLengthFilter``):

- aggregated atoms: a pair of atoms (periodic images included) closer than ``min_distance``
  Å, or closer than ``covalent_ratio`` times the sum of their covalent radii (ASE's
  ``ase.data.covalent_radii``, Cordero et al. 2008);
- box skewness: in the lower-triangular (LAMMPS) form of the cell, with rows
  ``a = (lx, 0, 0)``, ``b = (xy, ly, 0)``, ``c = (xz, yz, lz)``, any tilt angle
  ``atan(|xy| / ly)``, ``atan(|xz| / lz)`` or ``atan(|yz| / lz)`` above ``max_tilt_angle``
  degrees (``atan(|xy| / ly)`` is ``|90° - γ|``);
- box length: ``max(lx, ly, lz) / min(lx, ly, lz)`` above ``length_ratio`` (``lx, ly, lz`` are
  the widths of the cell in the same form, so a thin slab is caught even when its cell
  vectors have similar lengths).

Neighbour search uses ``ase.neighborlist.neighbor_list`` (linear-scaling, periodic images).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pfd_atomate.data import Dataset, Frame

#: rejection reasons, in the order the checks run (cheap cell checks first)
REASONS = ("box_length", "box_skewness", "min_distance", "covalent_distance")
#: the threshold that enables each check
_THRESHOLDS = dict(zip(REASONS, ("length_ratio", "max_tilt_angle", "min_distance", "covalent_ratio")))


class FrameFilter(BaseModel):
    """Pre-label filter of candidate frames; a ``None`` threshold disables its check.

    Attributes
    ----------
    min_distance: reject a frame with any interatomic distance below this, Å.
    covalent_ratio: reject a frame with any pair closer than ``covalent_ratio * (r_i + r_j)``
        (covalent radii). The default 0.6 only catches clearly aggregated atoms (e.g. Si-Si
        below 1.33 Å, against a 2.35 Å bond).
    max_tilt_angle: largest allowed cell tilt angle, degrees, in (0, 90) (dpgen2's ``theta``).
    length_ratio: largest allowed ratio of the longest to the shortest cell width (> 1)
        (dpgen2's ``length_ratio``).

    The two cell checks apply only to fully periodic frames.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must fail, not be ignored

    min_distance: float | None = Field(default=None, gt=0)
    covalent_ratio: float | None = Field(default=0.6, gt=0)
    max_tilt_angle: float | None = Field(default=60.0, gt=0, lt=90)
    length_ratio: float | None = Field(default=5.0, gt=1)

    @model_validator(mode="after")
    def _some_check_enabled(self) -> FrameFilter:
        if not self.active_reasons:
            raise ValueError("FrameFilter: every check is disabled (all thresholds are None)")
        return self

    @property
    def active_reasons(self) -> list[str]:
        """Names of the enabled checks, in the order they run."""
        return [r for r in REASONS if getattr(self, _THRESHOLDS[r]) is not None]

    def check(self, frame: Frame) -> str | None:
        """Return the first failed check's name (one of :data:`REASONS`), or ``None`` if the frame passes."""
        periodic = all(frame.pbc)
        if periodic and (self.length_ratio is not None or self.max_tilt_angle is not None):
            widths, tilts = _cell_widths_and_tilt_angles(np.asarray(frame.cell, dtype=float))
            if self.length_ratio is not None and widths.max() > self.length_ratio * widths.min():
                return "box_length"
            if self.max_tilt_angle is not None and tilts.max() > self.max_tilt_angle:
                return "box_skewness"
        if self.min_distance is not None or self.covalent_ratio is not None:
            from ase.neighborlist import neighbor_list

            atoms = frame.to_atoms(with_labels=False)
            if self.min_distance is not None and len(neighbor_list("d", atoms, self.min_distance)):
                return "min_distance"
            if self.covalent_ratio is not None:
                from ase.data import covalent_radii

                # neighbor_list returns the pairs with d < cutoff_i + cutoff_j
                cutoffs = self.covalent_ratio * covalent_radii[atoms.numbers]
                if len(neighbor_list("d", atoms, cutoffs.tolist())):
                    return "covalent_distance"
        return None

    def apply(self, dataset: Dataset) -> tuple[Dataset, dict[str, int]]:
        """Split off the frames that fail a check.

        Parameters
        ----------
        dataset: candidate frames (labels are ignored).

        Returns
        -------
        kept: the passing frames, original order, same dataset name.
        rejected: number of rejected frames per enabled check (zeros included); a frame is
            counted once, under the first check it fails (order of :data:`REASONS`), so the
            counts add up to ``len(dataset) - len(kept)``.
        """
        reasons = [self.check(frame) for frame in dataset.frames]
        kept = [frame for frame, reason in zip(dataset.frames, reasons) if reason is None]
        return Dataset(frames=kept, name=dataset.name), {r: reasons.count(r) for r in self.active_reasons}


def _cell_widths_and_tilt_angles(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lx, ly, lz) in Å and the three tilt angles in degrees of the lower-triangular form of ``cell``."""
    from ase.cell import Cell

    std, _ = Cell(cell).standard_form()
    std = np.asarray(std)
    # abs: a left-handed cell keeps its handedness in standard form (negative lz)
    lx, ly, lz = np.abs(np.diag(std))
    xy, xz, yz = std[1, 0], std[2, 0], std[2, 1]
    tilts = np.degrees(np.arctan(np.abs([xy / ly, xz / lz, yz / lz])))
    return np.array([lx, ly, lz]), tilts
