"""Phonon band structures of a model and a reference through atomate2's phonon flows, with the band RMSE.

Both sides run atomate2's own finite-displacement flow (:class:`~atomate2.common.flows.phonons.BasePhononMaker`:
phonopy displacements, one static force job per displaced supercell, a ``PhononBSDOSDoc``) on the
same structure, the same supercell matrix and the same seekpath q-point path, so their band
structures compare branch by branch. A force field runs atomate2's force-field ``PhononMaker``; CP2K
runs :class:`Cp2kPhononMaker` (atomate2 0.1.5 has no CP2K phonon flow). Neither relaxes the structure:
the phonons are those of the structure given, which should be at the reference's equilibrium.

The band RMSE is the autoplex measure (Ertural et al., "Phonon-accurate machine-learning potentials
from automated workflows", SI Table 1; autoplex ``get_rmse``): ``sqrt(mean((ω_model - ω_ref)^2))``
over all branches at all q-points of the path, in THz. Imaginary modes are negative frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from atomate2.common.flows.phonons import BasePhononMaker
from jobflow import Flow, Maker, job
from pydantic import BaseModel

from pfd_atomate.validation.figures import pyplot, save_figure

if TYPE_CHECKING:
    from atomate2.forcefields.flows.phonons import PhononMaker
    from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine

#: displacement of phonopy's finite-displacement supercells, Å (autoplex benchmark setting)
DEFAULT_DISPLACEMENT = 0.01


def force_field_phonon_maker(
    min_length: float = 10.0, displacement: float = DEFAULT_DISPLACEMENT, npoints: int = 51
) -> PhononMaker:
    """atomate2's force-field ``PhononMaker`` for the structure as given (no relaxation, no static energy).

    Its force field is set later (:func:`~pfd_atomate.train.with_model.point_at`), so a model and
    its reference share everything else.

    Parameters
    ----------
    min_length: minimum supercell length, Å (atomate2 prefers 90° supercells).
    displacement: finite displacement, Å.
    npoints: q-points per path segment.

    Raises
    ------
    ValueError: ``min_length``, ``displacement`` or ``npoints`` out of range.
    """
    from atomate2.forcefields.flows.phonons import PhononMaker
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    if not min_length > 0:
        raise ValueError(f"min_length must be > 0 Å, got {min_length}")
    if not displacement > 0:
        raise ValueError(f"displacement must be > 0 Å, got {displacement}")
    if npoints < 2:
        raise ValueError(f"npoints must be >= 2, got {npoints}")
    return PhononMaker(
        min_length=min_length,
        displacement=displacement,
        bulk_relax_maker=None,
        static_energy_maker=None,
        phonon_displacement_maker=ForceFieldStaticMaker(),
        store_force_constants=False,
        generate_frequencies_eigenvectors_kwargs={"npoints_band": npoints},
    )


def _cp2k_displacement_maker() -> Maker:
    from pfd_atomate.label.cp2k import cp2k_static_maker

    # a 64-atom Si supercell (10.9 Å) needs far fewer k-points than the 8-atom labelling cell
    return cp2k_static_maker(kpoints=(2, 2, 2), name="cp2k phonon static")


@dataclass
class Cp2kPhononMaker(BasePhononMaker):
    """atomate2's finite-displacement phonon flow with CP2K static forces.

    atomate2 0.1.5 ships phonon flows for VASP, FHI-aims and force fields only; this is its
    ``BasePhononMaker`` with a CP2K ``StaticMaker`` (default: :func:`~pfd_atomate.label.cp2k.cp2k_static_maker`
    with a 2x2x2 k-mesh, for 64-atom supercells of Si) and no relaxation or static energy job.

    atomate2's CP2K task documents keep CP2K's forces in Hartree/Bohr (pymatgen's ``Cp2kOutput``),
    while atomate2's phonon analysis expects eV/Å; one job between the displacement calculations and
    the analysis converts them (:data:`~pfd_atomate.label.adapters.CONVENTIONS`), and ``code`` is
    "ase" (eV, Å, amu → THz; atomate2 accepts no "cp2k").

    The same job removes each displaced cell's net force (``remove_drift``, default true): CP2K's
    real-space grid breaks translational invariance (the egg-box effect), and with phonopy's 0.01 Å
    displacement a net force of 9e-4 eV/Å in a 64-atom 3C-SiC cell put its acoustic modes at Γ at
    0.76 THz instead of 0 (measured, ``benchmarks/sic.py --reference``). A force field's forces sum
    to zero already.
    """

    name: str = "cp2k phonon"
    min_length: float | None = 10.0
    code: str = "ase"
    bulk_relax_maker: Maker | None = None
    static_energy_maker: Maker | None = None
    phonon_displacement_maker: Maker = field(default_factory=_cp2k_displacement_maker)
    store_force_constants: bool = False
    remove_drift: bool = True

    @property
    def prev_calc_dir_argname(self) -> str:
        """Argument of atomate2's CP2K Makers that names a previous calculation folder."""
        return "prev_dir"

    def make(self, structure, prev_dir=None, **kwargs) -> Flow:
        """atomate2's phonon flow (see ``BasePhononMaker.make``), its forces read in eV/Å (net force removed
        with :attr:`remove_drift`)."""
        flow = super().make(structure, prev_dir=prev_dir, **kwargs)
        by_function = {j.function.__name__: j for j in flow.jobs if hasattr(j, "function")}
        collect = by_function["generate_frequencies_eigenvectors"]
        convert = forces_in_ev_per_angstrom(collect.function_kwargs["displacement_data"], remove_drift=self.remove_drift)
        collect.function_kwargs["displacement_data"] = convert.output
        flow.add_jobs(convert)
        return flow


@job
def forces_in_ev_per_angstrom(displacement_data: dict, remove_drift: bool = False) -> dict:
    """atomate2's displacement outputs (``{"forces": [(n_atoms, 3) per cell], ...}``) with CP2K's
    Hartree/Bohr forces in eV/Å; with ``remove_drift``, each cell's mean force (its net force / n_atoms)
    subtracted from every atom, so that the force constants obey translational invariance (the acoustic
    modes at Γ are 0)."""
    from pfd_atomate.label.adapters import CONVENTIONS

    factor = CONVENTIONS["cp2k"].forces_to_ev_per_angstrom
    forces = [np.asarray(f, dtype=float) * factor for f in displacement_data["forces"]]
    if remove_drift:
        forces = [f - f.mean(axis=0) for f in forces]
    return {**displacement_data, "forces": [f.tolist() for f in forces]}


class PhononComparison(BaseModel):
    """Model vs reference phonon band structures on one q-point path.

    Attributes
    ----------
    model, reference: calculator names.
    n_qpoints, n_branches: shape of each band structure.
    labels: high-symmetry points along the path.
    band_rmse: autoplex band RMSE over all branches and q-points, THz.
    max_abs_error: largest absolute frequency difference, THz.
    gamma_acoustic_max: largest |ω| of the three lowest modes at Γ, per calculator name, THz
        (should be ~0: translational invariance).
    min_frequency: lowest frequency on the path per calculator name, THz (< 0: imaginary modes).
    max_frequency: highest frequency on the path per calculator name, THz.
    plot: path of the PNG, if written.
    """

    model: str
    reference: str
    n_qpoints: int
    n_branches: int
    labels: list[str]
    band_rmse: float
    max_abs_error: float
    gamma_acoustic_max: dict[str, float]
    min_frequency: dict[str, float]
    max_frequency: dict[str, float]
    plot: str | None = None


def as_band_structure(obj: Any) -> PhononBandStructureSymmLine:
    """A pymatgen ``PhononBandStructureSymmLine`` from itself or its dict (as read from a JobStore)."""
    from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine

    return obj if isinstance(obj, PhononBandStructureSymmLine) else PhononBandStructureSymmLine.from_dict(obj)


def compare_band_structures(
    model: Any, reference: Any, model_name: str = "model", reference_name: str = "reference",
    plot_path: str | Path | None = None,
) -> PhononComparison:
    """Compare two phonon band structures (``bands`` of shape (n_branches, n_qpoints), THz) on one path.

    Raises
    ------
    ValueError: equal names, or band structures on different q-points or with different branch
        counts (other structure, supercell or path).
    """
    if model_name == reference_name:
        raise ValueError(f"model and reference need different names, both are {model_name!r}")
    mod, ref = as_band_structure(model), as_band_structure(reference)
    q_mod = np.array([q.frac_coords for q in mod.qpoints])
    q_ref = np.array([q.frac_coords for q in ref.qpoints])
    if mod.bands.shape != ref.bands.shape or not np.allclose(q_mod, q_ref, atol=1e-6):
        raise ValueError(f"band structures differ in q-points or branches ({mod.bands.shape} vs {ref.bands.shape});"
                         " run both on the same structure, supercell_matrix and path")
    diff = mod.bands - ref.bands
    gamma = np.all(np.abs(q_ref) < 1e-8, axis=1)
    if not gamma.any():
        raise ValueError("the q-point path does not pass through Γ")

    def acoustic(bands: np.ndarray) -> float:
        return float(np.max(np.abs(np.sort(bands[:, gamma], axis=0)[:3])))

    result = PhononComparison(
        model=model_name, reference=reference_name, n_qpoints=ref.bands.shape[1], n_branches=ref.bands.shape[0],
        labels=[b["name"] for b in ref.branches],
        band_rmse=float(np.sqrt(np.mean(diff**2))), max_abs_error=float(np.max(np.abs(diff))),
        gamma_acoustic_max={model_name: acoustic(mod.bands), reference_name: acoustic(ref.bands)},
        min_frequency={model_name: float(mod.bands.min()), reference_name: float(ref.bands.min())},
        max_frequency={model_name: float(mod.bands.max()), reference_name: float(ref.bands.max())},
    )
    if plot_path is not None:
        result.plot = str(plot_band_structures(mod, ref, result, plot_path))
    return result


def plot_band_structures(model, reference, comparison: PhononComparison, path: str | Path) -> Path:
    """Reference (blue) and model (red, dashed) band structures on one axis with pymatgen's
    ``PhononBSPlotter.plot_compare``; the title gives the band RMSE. Returns the path written."""
    from pymatgen.phonon.plotter import PhononBSPlotter

    pyplot()  # headless backend before pymatgen touches pyplot
    ax = PhononBSPlotter(as_band_structure(reference), label=comparison.reference).plot_compare(
        {comparison.model: PhononBSPlotter(as_band_structure(model))},
        other_kwargs={"linestyle": "--"}, legend_kwargs={"fontsize": 9},
    )
    ax.set_title(f"phonon bands: band RMSE {comparison.band_rmse:.3f} THz")
    return save_figure(ax.figure, path)
