"""Real CP2K labels through atomate2's CP2K StaticMaker (Debian's cp2k.psmp + cp2k-data).

Checks the units and signs the adapter applies to CP2K's task document (forces printed in
Hartree/Bohr, stress in GPa) against finite differences of the CP2K energy itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from pfd_atomate.data import Dataset, Frame
from pfd_atomate.label import LabelMaker, LabelOutput, cp2k_static_maker

needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None, reason="cp2k.psmp not on PATH")

HARTREE_EV = 27.211386


def si2_frames(h: float = 0.01, eps: float = 0.005) -> Dataset:
    """A compressed, distorted Si2 cell, then +-h Å moves of atom 0 along x and +-eps strains."""
    atoms = bulk("Si", "diamond", a=5.38)  # 2-atom primitive cell, ~1.5% compressed
    atoms.positions[1] += [0.06, -0.03, 0.02]
    frames = [Frame.from_atoms(atoms, with_labels=False)]
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[0, 0] += sign * h
        frames.append(Frame.from_atoms(moved, with_labels=False))
    for sign in (1, -1):
        strained = atoms.copy()
        strained.set_cell(atoms.cell * (1 + sign * eps), scale_atoms=True)
        frames.append(Frame.from_atoms(strained, with_labels=False))
    return Dataset(frames=frames)


def test_preset_input_is_restricted_diagonalisation_with_kpoints():
    from atomate2.cp2k.schemas.calculation import CalculationInput
    from pymatgen.io.ase import AseAtomsAdaptor

    maker = cp2k_static_maker(kpoints=(4, 4, 4), smearing_temperature=500)
    structure = AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43, cubic=True))
    text = str(maker.input_set_generator.get_input_set(structure).cp2k_input)
    expected = ("UKS False", "MONKHORST-PACK 4 4 4", "ELEC_TEMP 500", "&DIAGONALIZATION", "STRESS_TENSOR ANALYTICAL")
    for line in expected:
        assert line in text
    assert "&OT" not in text
    # generating the input set made atomate2 able to parse restricted (RKS) outputs
    assert CalculationInput(dft={"rks": "RKS", "Multiplicity": 1}).dft["Multiplicity"] == 1
    gamma = cp2k_static_maker(kpoints=None).input_set_generator.get_input_set(structure).cp2k_input
    assert "&KPOINTS" not in str(gamma)


def test_kpoint_density_gives_a_full_monkhorst_pack_mesh_per_cell():
    """One labeller for cells of several shapes; a symmetric cell must not get atomate2's irreducible
    k-point list (CP2K does not symmetrize forces or stress over it)."""
    from monty.json import MontyDecoder
    from pymatgen.io.ase import AseAtomsAdaptor

    maker = MontyDecoder().process_decoded(cp2k_static_maker(kpoint_density=40).as_dict())  # as read from a store
    cells = {"MONKHORST-PACK 3 3 3": bulk("Si", "diamond", a=5.43, cubic=True),  # 8 atoms, 5.43 Å
             "MONKHORST-PACK 6 6 6": bulk("Si", "diamond", a=5.43),  # 2-atom primitive cell
             "&KPOINTS": bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)}  # 64 atoms: pymatgen rounds to Γ
    for scheme, atoms in cells.items():
        text = str(maker.input_set_generator.get_input_set(AseAtomsAdaptor.get_structure(atoms)).cp2k_input)
        assert "GENERAL" not in text
        assert (scheme in text) == (scheme != "&KPOINTS")  # a 1x1x1 mesh: CP2K's Γ-point code, no k-points
    with pytest.raises(ValueError, match="kpoint_density"):
        cp2k_static_maker(kpoint_density=0)


def test_preset_rejects_bad_settings():
    with pytest.raises(ValueError, match="kpoints"):
        cp2k_static_maker(kpoints=(2, 2))
    with pytest.raises(ValueError, match="cutoff"):
        cp2k_static_maker(cutoff=0)
    with pytest.raises(ValueError, match="basis_and_potential"):
        cp2k_static_maker({"Si": "DZVP-MOLOPT-SR-GTH"})


@pytest.mark.skipif(not Path("/usr/share/cp2k/BASIS_MOLOPT").exists(), reason="cp2k-data not installed")
def test_preset_checks_names_in_cp2k_data_files():
    with pytest.raises(ValueError, match="GTH-PBE-q5"):
        cp2k_static_maker({"Si": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q5")})
    with pytest.raises(ValueError, match="not found"):
        cp2k_static_maker({"Cu": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q11")}, basis_filename="BASIS_MOLOPT_UCL")


@pytest.mark.cp2k
@needs_cp2k
def test_cp2k_labels_agree_with_finite_differences(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the 2 cores are shared with other tests
    h, eps = 0.01, 0.005
    frames = si2_frames(h, eps)
    maker = LabelMaker(static_maker=cp2k_static_maker(kpoints=(2, 2, 2), cutoff=250, eps_default=1e-8))
    flow = maker.make(frames)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, root_dir=tmp_path, create_folders=True, ensure_success=True)
    out = LabelOutput.model_validate(store.get_output(flow.output.uuid, load=True))
    assert (out.n_labelled, out.failed) == (5, [])
    base, plus, minus, expanded, compressed = out.dataset

    # GTH-PBE (4 valence electrons) Si: about -3.95 Ha/atom
    energy_per_atom_ha = base.energy / base.n_atoms / HARTREE_EV
    assert -4.0 < energy_per_atom_ha < -3.9
    forces = np.asarray(base.forces)
    assert np.abs(forces).max() > 0.1  # the distortion gives real forces (eV/Å)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-3)

    # force = -dE/dx: a Hartree/Bohr vs eV/Å slip would be off by a factor of 51
    fd_force = -(plus.energy - minus.energy) / (2 * h)
    assert forces[0, 0] == pytest.approx(fd_force, rel=0.01)

    # virial = -dE/d(strain): trace = -dE/d(eps) for a uniform scaling of the cell by (1 + eps)
    fd_trace = -(expanded.energy - compressed.energy) / (2 * eps)
    trace = np.trace(base.virial)
    assert trace > 0  # compressed cell pushes outwards
    assert trace == pytest.approx(fd_trace, rel=0.02)
