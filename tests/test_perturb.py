"""Perturbation of input structures (PFD step 1) through dpdata."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from pfd_atomate.perturb.core import perturb_structures


def diamond_si(a: float = 5.43) -> Structure:
    """Conventional 8-atom diamond Si cell (cubic, so its cell is already lower-triangular)."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]])


def triclinic_sio() -> Structure:
    """A low-symmetry two-species cell, to catch any mixing of atom order or cell convention."""
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 81, 97, 104)
    return Structure(
        lattice, ["Si", "O", "O", "Si"], [[0, 0, 0], [0.5, 0.4, 0.5], [0.2, 0.25, 0.1], [0.7, 0.1, 0.3]]
    )


def strain_matrices(ds, a: float) -> np.ndarray:
    """Symmetric strain matrices E (n_frames, 3, 3) of frames made from a cubic cell of side ``a``.

    dpdata maps the cell C = aI to a I (I + E) Q with Q a rotation, so the metric
    C' C'^T = a^2 (I + E)^2 is rotation-free and I + E is its symmetric square root.
    """
    out = []
    for frame in ds:
        cell = np.asarray(frame.cell)
        w, v = np.linalg.eigh(cell @ cell.T / a**2)
        out.append(v @ np.diag(np.sqrt(w)) @ v.T - np.eye(3))
    return np.array(out)


def displacement_vectors(ds, structure: Structure) -> np.ndarray:
    """Atomic displacements (n_frames * n_atoms, 3), Å, of perturbed frames relative to the strained input.

    The strained, not yet displaced, positions are the input's fractional coordinates in the
    perturbed cell; the difference is taken in fractional coordinates with the minimum image.
    """
    frac0 = structure.frac_coords
    out = []
    for frame in ds:
        cell = np.asarray(frame.cell)
        dfrac = np.asarray(frame.positions) @ np.linalg.inv(cell) - frac0
        dfrac -= np.round(dfrac)
        out.append(dfrac @ cell)
    return np.concatenate(out)


def test_cell_strain_statistics_scale_with_fraction():
    a = 5.43
    mean_diag, mean_off = {}, {}
    for f in (0.02, 0.06):
        ds = perturb_structures([diamond_si(a)], n_frames=300, cell_pert_fraction=f, atom_pert_distance=0.0, seed=7)
        e = strain_matrices(ds, a)
        diag = np.abs(e[:, [0, 1, 2], [0, 1, 2]])
        off = np.abs(e[:, [0, 0, 1], [1, 2, 2]])
        # dpdata: diagonal ~ U[-f, f), off-diagonal ~ U[-f/2, f/2)
        assert diag.max() <= f + 1e-9 and off.max() <= f / 2 + 1e-9
        mean_diag[f], mean_off[f] = diag.mean(), off.mean()
        assert mean_diag[f] == pytest.approx(f / 2, rel=0.1)
        assert mean_off[f] == pytest.approx(f / 4, rel=0.1)
        # without atomic displacement the atoms follow the cell: no displacement at all
        assert np.abs(displacement_vectors(ds, diamond_si(a))).max() < 1e-9
    assert mean_diag[0.06] / mean_diag[0.02] == pytest.approx(3.0, rel=0.15)


def test_const_style_moves_every_atom_by_exactly_the_distance():
    s = triclinic_sio()
    ds = perturb_structures([s], n_frames=20, cell_pert_fraction=0.05, atom_pert_distance=0.2,
                            atom_pert_style="const", seed=3)
    lengths = np.linalg.norm(displacement_vectors(ds, s), axis=1)
    np.testing.assert_allclose(lengths, 0.2, atol=1e-8)
    # atom order and species survive the round trip through dpdata
    assert all(f.species == [site.specie.symbol for site in s] for f in ds)


def test_normal_style_rms_displacement_equals_distance():
    s = diamond_si() * (2, 2, 2)  # 64 atoms
    d = 0.15
    ds = perturb_structures([s], n_frames=50, cell_pert_fraction=0.03, atom_pert_distance=d,
                            atom_pert_style="normal", seed=11)
    v = displacement_vectors(ds, s)  # 3200 vectors
    # dpdata: each component ~ N(0, d^2/3), so <|v|^2> = d^2
    assert np.sqrt(np.mean(np.sum(v**2, axis=1))) == pytest.approx(d, rel=0.05)
    # isotropic and unbiased
    np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=0.01)


def test_uniform_style_fills_a_ball():
    s = diamond_si() * (2, 2, 2)
    d = 0.3
    ds = perturb_structures([s], n_frames=30, cell_pert_fraction=0.0, atom_pert_distance=d,
                            atom_pert_style="uniform", seed=5)
    r = np.linalg.norm(displacement_vectors(ds, s), axis=1)
    assert r.max() <= d + 1e-9
    # uniform in a ball of radius d: <r> = 3d/4
    assert r.mean() == pytest.approx(0.75 * d, rel=0.05)


def test_seed_reproducible_and_global_state_untouched():
    kwargs = dict(n_frames=4, cell_pert_fraction=0.03, atom_pert_distance=0.1)
    np.random.seed(2024)
    expected_next = np.random.rand(3)
    np.random.seed(2024)
    first = perturb_structures([triclinic_sio()], seed=42, **kwargs)
    # the caller's global random stream continues as if perturb had not run
    np.testing.assert_array_equal(np.random.rand(3), expected_next)
    again = perturb_structures([triclinic_sio()], seed=42, **kwargs)
    other = perturb_structures([triclinic_sio()], seed=43, **kwargs)
    assert [f.fingerprint() for f in first] == [f.fingerprint() for f in again]
    assert first[0].fingerprint() != other[0].fingerprint()
    # unseeded calls differ from each other
    assert perturb_structures([triclinic_sio()], **kwargs)[0].fingerprint() != perturb_structures(
        [triclinic_sio()], **kwargs
    )[0].fingerprint()


def test_supercell_count_order_and_sources():
    structures = [diamond_si(), triclinic_sio()]
    ds = perturb_structures(structures, n_frames=3, cell_pert_fraction=0.02, atom_pert_distance=0.05,
                            supercell=(2, 1, 2), seed=0, include_original=True)
    assert len(ds) == 2 * (3 + 1)
    assert [f.n_atoms for f in ds] == [32] * 4 + [16] * 4
    assert [f.source for f in ds] == ["perturb:0:original"] + ["perturb:0"] * 3 + ["perturb:1:original"] + ["perturb:1"] * 3
    assert not any(f.is_labelled for f in ds)
    # the original is the unperturbed supercell: 4x the volume
    assert ds[4].volume == pytest.approx(4 * triclinic_sio().volume)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(structures=[]), "empty"),
        (dict(n_frames=0), "n_frames"),
        (dict(cell_pert_fraction=-0.01), "cell_pert_fraction"),
        (dict(atom_pert_distance=-0.1), "atom_pert_distance"),
        (dict(atom_pert_style="gauss"), "atom_pert_style"),
        (dict(supercell=(2, 0, 1)), "supercell"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = dict(structures=[diamond_si()], n_frames=2, cell_pert_fraction=0.03, atom_pert_distance=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        perturb_structures(**args)


def test_overlapping_input_atoms_are_refused():
    s = diamond_si()
    # an extra Si 0.3 Å from a lattice site through the periodic boundary (x = 0 vs x = 5.13)
    s.append("Si", [5.43 - 0.3, 0, 0], coords_are_cartesian=True)
    with pytest.raises(ValueError, match="overlapping atoms"):
        perturb_structures([s], n_frames=1, cell_pert_fraction=0.0, atom_pert_distance=0.1)
