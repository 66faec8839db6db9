"""One k-point mesh per input structure: strained copies and supercells of a structure keep its mesh.

The meshes are read from the inputs that atomate2's own CP2K and VASP input-set generators write.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from pfd_atomate.data import Dataset, Frame
from pfd_atomate.label import LabelMaker, cp2k_static_maker
from pfd_atomate.label.cache import labeller_key
from pfd_atomate.label.jobs import label_frames
from pfd_atomate.label.kpoints import match_reference, mesh_references, pinned_makers


def si8() -> Structure:
    return AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43, cubic=True))


def beta_sn() -> Structure:
    """β-Sn Si (I4_1/amd), the 8-atom body-centred tetragonal cell, a = 4.81 Å, c = 5.30 Å."""
    return Structure.from_spacegroup(141, Lattice.tetragonal(4.81, 5.30), ["Si"], [[0, 0, 0]])


def strained_copies(structure: Structure, n: int, seed: int, amplitude: float = 0.05) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        copy = structure.copy()
        copy.apply_strain(rng.uniform(-amplitude, amplitude, 3))
        copy.perturb(0.05)
        out.append(copy)
    return out


def cp2k_mesh(maker, structure: Structure) -> str:
    """The Monkhorst-Pack line of the CP2K input ``maker`` writes for ``structure`` ("" for Γ only)."""
    text = str(maker.input_set_generator.get_input_set(structure).cp2k_input)
    return next((line.split("SCHEME")[-1].strip() for line in text.splitlines() if "MONKHORST-PACK" in line), "")


def test_strained_copies_keep_the_mesh_of_their_structure():
    """A density-based mesh alone follows each frame's strain; with the inputs as references every strained
    diamond cell is labelled on diamond's 3x3x3 mesh and every β-Sn cell on β-Sn's 4x4x4, though both
    cells have 8 Si atoms and β-Sn is only ~11 % strained from diamond."""
    maker = cp2k_static_maker(kpoint_density=40)
    references = mesh_references(maker, [si8(), beta_sn()])
    assert [r.mesh for r in references] == [(3, 3, 3), (4, 4, 4)]
    for structure, expected in ((si8(), "MONKHORST-PACK 3 3 3"), (beta_sn(), "MONKHORST-PACK 4 4 4")):
        copies = strained_copies(structure, 8, seed=len(expected))
        own = {cp2k_mesh(maker, s) for s in copies}
        assert len(own) > 1  # the problem: one structure's frames on several meshes
        makers = pinned_makers(maker, [Frame.from_structure(s) for s in copies], references)
        assert {cp2k_mesh(m, s) for m, s in zip(makers, copies)} == {expected}
        assert len({id(m) for m in makers}) == 1  # one Maker per mesh


def test_supercells_divide_the_mesh_and_strangers_keep_their_own():
    maker = cp2k_static_maker(kpoint_density=40)
    references = mesh_references(maker, [si8()])
    supercell = si8().make_supercell([2, 2, 1], in_place=False)
    supercell.apply_strain(0.02)
    sheared = si8().make_supercell([[1, 1, 0], [0, 1, 0], [0, 0, 1]], in_place=False)  # same atoms, other vectors
    far = si8().copy()
    far.apply_strain(0.3)
    carbon = AseAtomsAdaptor.get_structure(bulk("C", "diamond", a=3.57, cubic=True))  # 8 atoms, 34 % smaller
    frames = [Frame.from_structure(s) for s in (supercell, sheared, far, carbon)]
    makers = pinned_makers(maker, frames, references)
    assert cp2k_mesh(makers[0], supercell) == "MONKHORST-PACK 2 2 3"  # ceil(3/2), ceil(3/2), 3
    assert makers[1:] == [maker] * 3  # non-diagonal supercell, 30 % strain, another crystal: their own mesh
    assert cp2k_mesh(makers[3], carbon) == "MONKHORST-PACK 6 6 6"  # its own density mesh, not diamond Si's


def test_fixed_meshes_and_force_fields_have_nothing_to_pin():
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    for maker in (cp2k_static_maker(kpoints=(4, 4, 4)), cp2k_static_maker(kpoints=None), ForceFieldStaticMaker()):
        assert mesh_references(maker, [si8()]) == []


def test_vasp_default_labels_strained_frames_on_the_reference_mesh():
    """atomate2's VASP StaticMaker sets its mesh from reciprocal_density 64: Γ-centred 5x5x4 for β-Sn Si8."""
    from atomate2.vasp.jobs.core import StaticMaker

    maker = StaticMaker()
    references = mesh_references(maker, [si8(), beta_sn()])
    assert [(r.mesh, r.style) for r in references] == [((4, 4, 4), "Gamma"), ((5, 5, 4), "Gamma")]
    copies = strained_copies(beta_sn(), 8, seed=5)
    own = {tuple(maker.input_set_generator.get_input_set(s, potcar_spec=True)["KPOINTS"].kpts[0]) for s in copies}
    assert len(own) > 1
    for pinned, structure in zip(pinned_makers(maker, [Frame.from_structure(s) for s in copies], references), copies):
        kpoints = pinned.input_set_generator.get_input_set(structure, potcar_spec=True)["KPOINTS"]
        assert tuple(kpoints.kpts[0]) == (5, 5, 4) and kpoints.style.name == "Gamma"


def test_rotated_frames_from_the_perturbation_keep_their_structure_mesh():
    """PerturbMaker's frames of a non-orthogonal cell come back rotated (a lower-triangular cell): they are
    still strained copies of their structure (here the 2-atom Si cell, 6x6x6 at 40 k-points/Å⁻³)."""
    from scipy.spatial.transform import Rotation

    from pfd_atomate.perturb.core import perturb_structures

    maker = cp2k_static_maker(kpoint_density=40)
    primitive = AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43))
    references = mesh_references(maker, [primitive])
    frames = list(perturb_structures([primitive], n_frames=6, cell_pert_fraction=0.03, atom_pert_distance=0.1,
                                     seed=0))
    assert not np.allclose(np.asarray(frames[0].cell), primitive.lattice.matrix, atol=0.3)  # rotated
    matrix = Rotation.from_euler("xyz", [20, 35, -50], degrees=True).as_matrix()
    rotated = Structure(primitive.lattice.matrix @ matrix.T, primitive.species, primitive.frac_coords)
    frames.append(Frame.from_structure(rotated))
    for frame in frames:
        assert match_reference(np.asarray(frame.cell), 2, references)[1].tolist() == np.eye(3, dtype=int).tolist()
    makers = pinned_makers(maker, frames, references)
    assert {cp2k_mesh(m, f.to_structure()) for m, f in zip(makers, frames)} == {"MONKHORST-PACK 6 6 6"}


@pytest.mark.parametrize("reuse_labels", [True, False])
def test_label_maker_runs_each_frame_on_its_reference_mesh(reuse_labels):
    """The static jobs get the pinned Maker, and a label's key names its mesh: a label computed on
    another mesh is never reused for it."""
    maker = cp2k_static_maker(kpoint_density=40)
    copies = strained_copies(si8(), 4, seed=3)
    frames = Dataset(frames=[Frame.from_structure(s) for s in copies])
    label = LabelMaker(static_maker=maker, kpoint_references=[si8()], reuse_labels=reuse_labels)
    made = label.make(frames)
    if reuse_labels:  # the fan-out job: run its function (no store: nothing to reuse)
        made = label_frames.original(*made.function_args, **made.function_kwargs).replace
    guards = [j for j in made.jobs if j.name.startswith("pfd label cp2k")]
    assert len(guards) == 4
    for guard, structure in zip(guards, copies):
        assert cp2k_mesh(guard.function_args[0], structure) == "MONKHORST-PACK 3 3 3"
        if reuse_labels:  # only labels looked up in the store carry keys
            key = guard.metadata["pfd_label_keys"][0]
            assert key.startswith(labeller_key(guard.function_args[0]))
            assert not key.startswith(labeller_key(maker))


def test_config_file_pins_meshes_unless_told_not_to():
    from pfd_atomate.config import load_config

    for pin, expected in ((True, [(3, 3, 3)]), (False, [])):
        config = load_config({"structures": ["si8.cif"], "distill": None,
                              "label": {"pin_kpoints": pin, "labeller": {"kind": "cp2k", "kpoint_density": 40}}})
        flow = config.build().make(si8())
        initial = next(j for j in flow.jobs if j.name == "pfd label initial")
        assert [r.mesh for r in initial.function_args[6]] == expected
