"""A CP2K static-labelling preset for atomate2's CP2K ``StaticMaker``.

atomate2's default CP2K set is spin-polarised, uses orbital transformation (OT, gapped
systems only), the Gamma point only and basis/potential hashes from pymatgen's own data
files. For labelling small periodic cells (the PFD demo: Si8) we want k-points,
diagonalisation with Fermi-Dirac smearing, no spin polarisation and the named
basis sets/pseudopotentials that the ``cp2k-data`` package ships
(``BASIS_MOLOPT``, ``GTH_POTENTIALS``; Debian installs them in ``/usr/share/cp2k``).

atomate2 0.1.5 cannot parse the output of a spin-restricted (RKS) CP2K run; the patch that
makes it able to lives in :mod:`pfd_atomate.compat.atomate2` (applied when :mod:`pfd_atomate.label`
is imported, i.e. in every process that runs a label job).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomate2.cp2k.sets.core import StaticSetGenerator
from pymatgen.io.vasp.inputs import Kpoints  # atomate2's CP2K sets take VASP-style k-points

if TYPE_CHECKING:
    from atomate2.cp2k.jobs.core import StaticMaker
    from pymatgen.core import Structure

#: GTH/MOLOPT names for silicon: the 4-valence-electron PBE pseudopotential.
SI_DZVP_GTH_PBE: dict[str, tuple[str, str]] = {"Si": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q4")}

# where cp2k looks for its data files; Debian's cp2k-data installs here
_DATA_DIR_CANDIDATES = ("/usr/share/cp2k", "/usr/share/cp2k/data")


def cp2k_static_maker(
    basis_and_potential: Mapping[str, tuple[str, str]] | None = None,
    kpoints: tuple[int, int, int] | None = (4, 4, 4),
    kpoint_density: float | None = None,
    cutoff: float = 300.0,
    rel_cutoff: float = 40.0,
    xc_functional: str = "PBE",
    smearing_temperature: float | None = 300.0,
    spin_polarized: bool = False,
    eps_scf: float = 1e-6,
    eps_default: float = 1e-10,
    mixing_alpha: float = 0.4,
    basis_filename: str = "BASIS_MOLOPT",
    potential_filename: str = "GTH_POTENTIALS",
    data_dir: str | Path | None = None,
    name: str = "cp2k static",
) -> StaticMaker:
    """Build an atomate2 CP2K ``StaticMaker`` for labelling periodic frames.

    The input set runs ``ENERGY_FORCE`` with the analytical stress tensor, diagonalisation
    (k-points are incompatible with OT in CP2K) and, by default, Fermi-Dirac smearing and no
    spin polarisation. The structure is not re-sorted, so atoms keep the frame's order.

    Parameters
    ----------
    basis_and_potential
        ``{element: (basis name, potential name)}`` looked up in ``basis_filename`` and
        ``potential_filename``. Default: :data:`SI_DZVP_GTH_PBE` (Si only).
    kpoints
        Monkhorst-Pack mesh ``(n1, n2, n3)``; ``None`` (or ``(1, 1, 1)``) for the Gamma
        point only. The default suits the 8-atom cubic Si cell (a = 5.43 Å): measured on a
        rattled, strained Si8, 2x2x2 / 3x3x3 differ from 4x4x4 by 81 / 13 meV/atom and
        0.037 / 0.013 eV/Å (max force error), 6x6x6 by 1.3 meV/atom and 0.001 eV/Å.
    kpoint_density
        k-points per Å⁻³ of reciprocal volume (atomate2's ``reciprocal_density``, pymatgen's
        ``Kpoints.automatic_density_by_vol``): a mesh per frame, for runs on cells of several
        shapes (phases). Replaces ``kpoints`` when given. 40 gives 3x3x3 for the 8-atom cubic Si
        cell, 4x4x4 for 8-atom β-Sn (a = 4.81 Å, c = 5.30 Å) and BC8 (primitive) cells, but the
        Γ point only for 64 atoms (pymatgen rounds the mesh down): check the mesh of supercells.
        40 is too coarse for metals: the k-point error of β-Sn Si8 frames 3 % apart in strain
        spread over 35 meV/atom at 4x4x4, 4.7 at 6x6x6 and 2.5 at 8x8x8 (against 10x10x10;
        ``benchmarks/kpoint_convergence.py``); 300 gives 7x7x7 / 8x8x7 / 7x7x7 for the three cells.
        On its own the mesh follows each frame's strain (in the multi-phase benchmark run, 3 of 6
        perturbed diamond cells got 3x3x3 and 3 got 3x4x3, 3x4x4 or 4x3x3: k-point errors of up to
        ~13 meV/atom mixed in one structure's labels); a ``LabelMaker`` with ``kpoint_references``
        (``PFDMaker`` sets its input structures) keeps each input structure's mesh for all frames
        derived from it (:mod:`pfd_atomate.label.kpoints`).
    cutoff
        Plane-wave cutoff of the finest multigrid level, Ry.
    rel_cutoff
        Relative cutoff that maps Gaussians onto the multigrid levels, Ry.
    xc_functional
        CP2K XC functional name (must match the pseudopotential, e.g. PBE for GTH-PBE).
    smearing_temperature
        Fermi-Dirac electronic temperature, K; ``None`` switches smearing off.
    spin_polarized
        Unrestricted Kohn-Sham (UKS) when True.
    eps_scf
        SCF convergence threshold (density-matrix change under diagonalisation).
    eps_default
        CP2K's ``EPS_DEFAULT`` (integral/grid screening); ``EPS_PGF_ORB`` is left to
        CP2K's default, sqrt(``EPS_DEFAULT``). atomate2's set uses 1e-12 and 1e-16, which
        makes a Si8 4x4x4 label 2.7x slower (40 s vs 15 s) for changes below 2e-5 eV and
        1e-4 eV/Å.
    mixing_alpha
        Broyden density-mixing parameter. pymatgen's default (0.05) needs 18 SCF steps
        for a rattled Si8 cell where 0.4 needs 10 (same energy within 1e-5 Ha).
    basis_filename, potential_filename
        CP2K data files holding the named basis sets and pseudopotentials.
    data_dir
        Where to look for those files to check the names before any run; default: the
        ``CP2K_DATA_DIR`` environment variable or Debian's ``/usr/share/cp2k``. The check is
        skipped when the files are not found here (the job may run on another machine).
    name
        Job name.

    Returns
    -------
    atomate2.cp2k.jobs.core.StaticMaker
        The configured maker; ``maker.make(structure)`` gives one CP2K static job.

    Raises
    ------
    ValueError
        Bad k-point mesh or density, non-positive cutoffs or temperature, a malformed basis map, or a
        basis/potential name missing from the data files.
    """
    from atomate2.cp2k.jobs.core import StaticMaker

    basis_and_potential = dict(SI_DZVP_GTH_PBE if basis_and_potential is None else basis_and_potential)
    if not basis_and_potential:
        raise ValueError("basis_and_potential is empty: give {element: (basis, potential)}")
    for element, pair in basis_and_potential.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ValueError(f"basis_and_potential[{element!r}] must be (basis name, potential name), got {pair!r}")
    if kpoints is not None:
        kpoints = tuple(int(k) for k in kpoints)  # type: ignore[assignment]
        if len(kpoints) != 3 or min(kpoints) < 1:
            raise ValueError(f"kpoints must be three positive integers or None, got {kpoints}")
    if kpoint_density is not None and not kpoint_density > 0:
        raise ValueError(f"kpoint_density must be > 0 k-points per Å^-3, got {kpoint_density}")
    if cutoff <= 0 or rel_cutoff <= 0:
        raise ValueError(f"cutoff and rel_cutoff must be positive (Ry), got {cutoff}, {rel_cutoff}")
    if eps_scf <= 0 or eps_default <= 0:
        raise ValueError(f"eps_scf and eps_default must be positive, got {eps_scf}, {eps_default}")
    if not 0 < mixing_alpha <= 1:
        raise ValueError(f"mixing_alpha must be in (0, 1], got {mixing_alpha}")
    if smearing_temperature is not None and smearing_temperature <= 0:
        raise ValueError(f"smearing_temperature must be positive (K) or None, got {smearing_temperature}")
    _check_names_in_data_files(basis_and_potential, basis_filename, potential_filename, data_dir)

    settings: dict[str, Any] = {
        "basis_and_potential": {
            **{el: {"basis": b, "potential": p, "aux_basis": None} for el, (b, p) in basis_and_potential.items()},
            "basis_filenames": [basis_filename],
            "potential_filename": potential_filename,
        },
        "cutoff": float(cutoff),
        "rel_cutoff": float(rel_cutoff),
        "xc_functionals": [xc_functional],
        "eps_scf": float(eps_scf),
        "eps_default": float(eps_default),
        "eps_pgf_orb": None,
        "alpha": float(mixing_alpha),
        "ot": False,  # diagonalisation: needed for k-points and smearing
        "smearing": smearing_temperature is not None,
        "spin_polarized": bool(spin_polarized),
    }
    if smearing_temperature is not None:
        settings["elec_temp"] = float(smearing_temperature)
    common = {"user_input_settings": settings, "sort_structure": False}
    if kpoint_density is not None:
        generator = DensityStaticSetGenerator(kpoint_density=float(kpoint_density), **common)
    else:
        gamma_only = kpoints is None or tuple(kpoints) == (1, 1, 1)
        generator = StaticSetGenerator(user_kpoints_settings=None if gamma_only else Kpoints.monkhorst_automatic(kpoints),
                                       **common)
    return StaticMaker(name=name, input_set_generator=generator)


@dataclass
class DensityStaticSetGenerator(StaticSetGenerator):
    """atomate2's CP2K static set with a Monkhorst-Pack mesh per structure from a k-point density.

    atomate2's own ``reciprocal_density`` setting turns odd meshes into a list of the structure's
    irreducible k-points with weights (pymatgen's Gamma-style conversion), and CP2K does not
    symmetrize forces or stress over them: a frame with symmetry would get wrong forces. A
    ``MONKHORST-PACK`` scheme samples the full mesh (time reversal only).

    A ``Kpoints`` mesh given as ``user_kpoints_settings`` replaces the density: that is how
    :mod:`pfd_atomate.label.kpoints` keeps one structure's mesh for all frames derived from it.

    Attributes
    ----------
    kpoint_density: k-points per Å⁻³ of reciprocal volume (pymatgen ``Kpoints.automatic_density_by_vol``).
    """

    kpoint_density: float = 40.0

    def _get_kpoints(self, structure: Structure, kpoints_updates: dict | None) -> Kpoints | None:
        if isinstance(self.user_kpoints_settings, Kpoints):  # a mesh fixed per structure (label.kpoints)
            mesh = tuple(int(k) for k in self.user_kpoints_settings.kpts[0])
        else:
            mesh = tuple(int(k) for k in Kpoints.automatic_density_by_vol(structure, self.kpoint_density).kpts[0])
        return None if mesh == (1, 1, 1) else Kpoints.monkhorst_automatic(mesh)  # None: CP2K's Γ-point code


def _check_names_in_data_files(
    basis_and_potential: Mapping[str, tuple[str, str]],
    basis_filename: str,
    potential_filename: str,
    data_dir: str | Path | None,
) -> None:
    """Raise ValueError for basis/potential names absent from locally available data files."""
    dirs = [Path(data_dir)] if data_dir is not None else [
        Path(d) for d in (os.environ.get("CP2K_DATA_DIR"), *_DATA_DIR_CANDIDATES) if d]
    for filename, position in ((basis_filename, 0), (potential_filename, 1)):
        path = next((d / filename for d in dirs if (d / filename).is_file()), None)
        if path is None:
            continue
        text = path.read_text(errors="replace")
        for element, pair in basis_and_potential.items():
            # entry header lines look like "Si DZVP-MOLOPT-SR-GTH DZVP-MOLOPT-SR-GTH-q4"
            pattern = rf"^[ \t]*{re.escape(element)}[ \t]+(?:\S+[ \t]+)*{re.escape(pair[position])}(?:[ \t]|$)"
            if not re.search(pattern, text, flags=re.MULTILINE):
                kind = "basis set" if position == 0 else "potential"
                raise ValueError(f"{kind} {pair[position]!r} for {element} not found in {path}")
