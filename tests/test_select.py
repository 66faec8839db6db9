"""Pre-label filters, random selection and QUESTS entropy selection (PFD SI, Algorithm 1).

The first quests call in a fresh environment compiles numba kernels (~25 s, cached on disk
afterwards); later calls take well under a second here.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from pfd_atomate.data import Dataset, Frame
from pfd_atomate.select.entropy import (
    DH_CAP,
    EntropySelection,
    dataset_entropy,
    entropy_select,
    frame_descriptors,
)
from pfd_atomate.select.filters import FrameFilter
from pfd_atomate.select.sampling import random_select

A_SI = 5.43


def frame(symbols, positions, cell, pbc=True) -> Frame:
    return Frame.from_atoms(Atoms(symbols, positions=positions, cell=cell, pbc=pbc), with_labels=False)


def si_frame(rng=None, sigma=0.0, scale=1.0) -> Frame:
    atoms = bulk("Si", "diamond", A_SI, cubic=True)
    atoms.set_cell(atoms.cell * scale, scale_atoms=True)
    if sigma:
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    return Frame.from_atoms(atoms, with_labels=False)


def rotated(f: Frame, seed: int = 0) -> Frame:
    """The same configuration, rigidly rotated (cell and positions)."""
    from scipy.spatial.transform import Rotation

    r = Rotation.random(random_state=seed).as_matrix()
    return f.model_copy(update={"cell": (np.asarray(f.cell) @ r.T).tolist(),
                                "positions": (np.asarray(f.positions) @ r.T).tolist()})


# ---------------------------------------------------------------- filters


def test_distance_filters_use_periodic_images_and_covalent_radii():
    cell = np.eye(3) * A_SI
    # 0.43 Å apart only through the periodic boundary (5.0 Å apart without PBC)
    across_boundary = frame("Si2", [[0.2, 1, 1], [5.2, 1, 1]], cell)
    assert FrameFilter(covalent_ratio=None, min_distance=1.0).check(across_boundary) == "min_distance"
    assert FrameFilter().check(across_boundary) == "covalent_distance"
    # 1.0 Å pairs: below 0.6 * (1.11 + 1.11) = 1.33 Å for Si-Si, above 0.6 * (0.31 + 0.31) = 0.37 Å for H-H
    assert FrameFilter().check(frame("Si2", [[1, 1, 1], [2, 1, 1]], cell)) == "covalent_distance"
    assert FrameFilter().check(frame("H2", [[1, 1, 1], [2, 1, 1]], cell)) is None
    # an atom too close to its own periodic image (1.2 Å cubic cell)
    assert FrameFilter().check(frame("Si", [[0, 0, 0]], np.eye(3) * 1.2)) == "covalent_distance"
    # the perfect crystal (nearest neighbour 2.35 Å) passes everything
    assert FrameFilter(min_distance=2.0).check(si_frame()) is None


@pytest.mark.parametrize(("tilt_deg", "rejected"), [(55.0, False), (65.0, True)])
def test_box_skewness_uses_tilt_angle_in_standard_form(tilt_deg, rejected):
    ly = 6.0
    for cell in (
        [[6.0, 0, 0], [ly * np.tan(np.radians(tilt_deg)), ly, 0], [0, 0, 6.0]],  # xy tilt
        [[6.0, 0, 0], [0, 6.0, 0], [0, 6.0 * np.tan(np.radians(tilt_deg)), 6.0]],  # yz tilt
    ):
        f = frame("Si", [[0, 0, 0]], cell)
        flt = FrameFilter(covalent_ratio=None, length_ratio=None, max_tilt_angle=60.0)
        expected = "box_skewness" if rejected else None
        assert flt.check(f) == expected
        # the decision does not depend on how the frame is oriented in space
        assert flt.check(rotated(f, seed=3)) == expected


def test_box_skewness_accepts_primitive_fcc_cell():
    # 60° cell angles are a normal primitive cell (tilt angles ~30-35°), not a distorted box
    fcc = Frame.from_atoms(bulk("Cu", "fcc", 3.61), with_labels=False)
    assert FrameFilter().check(fcc) is None


def test_box_length_ratio():
    flt = FrameFilter(length_ratio=5.0)
    assert flt.check(frame("Si", [[0, 0, 0]], np.diag([3.0, 3.0, 14.0]))) is None
    assert flt.check(frame("Si", [[0, 0, 0]], np.diag([3.0, 3.0, 16.0]))) == "box_length"
    # cell checks do not apply to a non-periodic frame
    assert flt.check(frame("Si", [[0, 0, 0]], np.diag([3.0, 3.0, 16.0]), pbc=False)) is None


def test_apply_counts_each_rejected_frame_once_and_keeps_order():
    rng = np.random.default_rng(1)
    good = [si_frame(rng, 0.05) for _ in range(3)]
    crushed = si_frame(rng, 0.0, scale=0.5)  # nearest neighbour 1.18 Å
    long_box = frame("Si2", [[0, 0, 0], [0.5, 0.5, 0.5]], np.diag([2.5, 2.5, 20.0]))  # also too close to its images
    ds = Dataset(frames=[good[0], crushed, good[1], long_box, good[2]], name="pool")
    kept, rejected = FrameFilter().apply(ds)
    assert [f.fingerprint() for f in kept] == [f.fingerprint() for f in good]
    assert kept.name == "pool"
    assert rejected == {"box_length": 1, "box_skewness": 0, "covalent_distance": 1}


def test_filter_settings_round_trip_and_validation():
    flt = FrameFilter(min_distance=1.2, covalent_ratio=None, max_tilt_angle=45.0, length_ratio=4.0)
    assert FrameFilter.model_validate(flt.model_dump()) == flt
    with pytest.raises(ValueError, match="disabled"):
        FrameFilter(min_distance=None, covalent_ratio=None, max_tilt_angle=None, length_ratio=None)
    with pytest.raises(ValueError):
        FrameFilter(max_tilt_angle=95.0)


# ---------------------------------------------------------------- random selection


def test_random_select():
    idx = random_select(50, 20, seed=3)
    assert len(set(idx)) == 20 and all(0 <= i < 50 for i in idx)
    assert idx == random_select(50, 20, seed=3)
    assert idx != random_select(50, 20, seed=4)
    assert sorted(random_select(5, 5, seed=0)) == [0, 1, 2, 3, 4]
    for bad in (0, 51):
        with pytest.raises(ValueError, match="n_select"):
            random_select(50, bad, seed=0)
    with pytest.raises(ValueError, match="empty"):
        random_select(0, 1)


# ---------------------------------------------------------------- entropy selection


@pytest.fixture(scope="module")
def novelty_pool():
    """20 near-duplicates of crystalline Si + 3 novel frames at indices 4, 11, 17; crystal reference."""
    rng = np.random.default_rng(0)
    novel = {4: si_frame(rng, 0.2), 11: si_frame(rng, 0.0, scale=0.88), 17: si_frame(rng, 0.05, scale=1.12)}
    frames = [novel[i] if i in novel else si_frame(rng, 0.01) for i in range(23)]
    reference = Dataset(frames=[si_frame(rng, 0.01) for _ in range(3)])
    return Dataset(frames=frames), reference, set(novel)


def test_entropy_selection_picks_novel_frames_first(novelty_pool):
    candidates, reference, novel = novelty_pool
    sel = entropy_select(candidates, n_select=3, reference=reference)
    assert isinstance(sel, EntropySelection)
    assert set(sel.indices) == novel
    # greedy: each pick is less novel than the previous one, all far above the duplicates' dH
    assert sel.dh[0] > sel.dh[1] > sel.dh[2] > 10.0
    # random selection does not find them (chance per draw 1 / C(23, 3))
    assert all(set(random_select(23, 3, seed=s)) != novel for s in range(10))


def test_entropy_selection_dh_matches_quests_against_grown_set(novelty_pool):
    from quests.entropy import delta_entropy, entropy

    candidates, reference, _ = novelty_pool
    sel = entropy_select(candidates, n_select=2, reference=reference)
    cx = frame_descriptors(candidates)
    ref_x = np.vstack(frame_descriptors(reference))
    # first pick: largest mean dH against the reference alone
    dh0 = [np.mean(delta_entropy(x, ref_x, h=0.015)) for x in cx]
    assert sel.indices[0] == int(np.argmax(dh0))
    assert sel.dh[0] == pytest.approx(max(dh0), rel=1e-9)
    # second pick: dH against reference + first pick
    grown = np.vstack([ref_x, cx[sel.indices[0]]])
    assert sel.dh[1] == pytest.approx(np.mean(delta_entropy(cx[sel.indices[1]], grown, h=0.015)), rel=1e-9)
    assert sel.reference_entropy == pytest.approx(entropy(ref_x, h=0.015))
    assert sel.total_entropy == pytest.approx(
        entropy(np.vstack([ref_x] + [cx[i] for i in sel.indices]), h=0.015)
    )


def test_chunk_size_ranks_a_chunk_against_the_same_set(novelty_pool):
    _, reference, _ = novelty_pool
    rng = np.random.default_rng(5)
    a = si_frame(rng, 0.2)  # most novel, present twice
    b = si_frame(rng, 0.0, scale=0.95)  # novel, less than a
    candidates = Dataset(frames=[si_frame(rng, 0.01) for _ in range(4)] + [a, b, a])
    one = entropy_select(candidates, n_select=2, chunk_size=1, reference=reference)
    two = entropy_select(candidates, n_select=2, chunk_size=2, reference=reference)
    # chunk_size=1 re-ranks after adding a, so its copy has nothing new and b is taken
    assert one.indices == [4, 5]
    # chunk_size=2 ranks both picks against the reference only: a and its duplicate
    assert sorted(two.indices) == [4, 6]
    assert two.dh[0] == pytest.approx(two.dh[1])
    # the last chunk is truncated to reach n_select exactly
    three = entropy_select(candidates, n_select=5, chunk_size=2, reference=reference)
    assert len(three.indices) == len(set(three.indices)) == 5


def test_without_reference_first_pick_is_most_diverse_frame(novelty_pool):
    from quests.entropy import entropy

    candidates, _, novel = novelty_pool
    sel = entropy_select(candidates, n_select=3, reference=None)
    own = [entropy(x, h=0.015) for x in frame_descriptors(candidates)]
    assert sel.indices[0] == int(np.argmax(own))
    assert sel.dh[0] is None and sel.reference_entropy is None
    assert set(sel.indices) == novel
    assert sel.selected_entropy == pytest.approx(sel.total_entropy)
    assert all(d <= DH_CAP for d in sel.dh[1:])


@pytest.fixture(scope="module")
def md_pool():
    """61 frames of a Langevin MD of 32-atom fcc Cu with ASE's EMT, 900 K, every 10 steps."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", 3.61, cubic=True) * (2, 2, 2)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=900, friction=0.02, rng=rng, fixcm=False)
    frames: list[Frame] = []
    dyn.attach(lambda: frames.append(Frame.from_atoms(atoms, with_labels=False, source="md")), interval=10)
    dyn.run(600)
    return Dataset(frames=frames)


def test_entropy_selection_beats_random_on_md_pool(md_pool):
    sel = entropy_select(md_pool, n_select=10)
    assert sel.selected_entropy == pytest.approx(dataset_entropy(md_pool.subset(sel.indices)))
    random_h = [dataset_entropy(md_pool.subset(random_select(len(md_pool), 10, seed=s))) for s in range(8)]
    assert sel.selected_entropy > max(random_h)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_select=0), "n_select"),
        (dict(n_select=24), "n_select"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(reduce="median"), "reduce"),
        (dict(h=0.0), "bandwidth"),
    ],
)
def test_entropy_select_bad_arguments(novelty_pool, kwargs, message):
    candidates, _, _ = novelty_pool
    args = dict(n_select=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        entropy_select(candidates, **args)


def test_entropy_select_empty_candidates():
    with pytest.raises(ValueError, match="no candidate"):
        entropy_select(Dataset(), n_select=1)
    with pytest.raises(ValueError, match="empty"):
        dataset_entropy(Dataset())


# ---------------------------------------------------------------- a share per input structure


def test_share_quota_splits_evenly_and_passes_on_what_a_small_group_cannot_take():
    from pfd_atomate.select.sampling import share_quota

    assert share_quota(4, [10, 10, 10]) == [2, 1, 1]  # the remainder to the first structures
    assert share_quota(6, [10, 10, 10]) == [2, 2, 2]
    assert share_quota(6, [1, 10, 10]) == [1, 3, 2]  # the first has one candidate: its second pick moves on
    assert share_quota(3, [0, 5, 5]) == [0, 2, 1]
    assert share_quota(21, [1, 10, 10]) == [1, 10, 10]
    for n, sizes in ((4, [1, 1]), (-1, [3]), (1, [-1, 3])):
        with pytest.raises(ValueError, match="share_quota"):
            share_quota(n, sizes)


def _two_structures(rng):
    """Candidates of two input structures: diamond Si8 barely moving (like the reference) and a 12 % compressed,
    strongly rattled Si8 (novel); reference: diamond near equilibrium."""
    calm = Dataset(frames=[si_frame(rng, 0.02) for _ in range(6)], name="md:nvt:T300")
    hot = Dataset(frames=[si_frame(rng, 0.25, scale=0.88) for _ in range(6)], name="md:nvt:T300")
    reference = Dataset(frames=[si_frame(rng, 0.03) for _ in range(4)], name="train")
    return calm, hot, reference


def test_selection_shares_its_picks_among_input_structures():
    from pfd_atomate.select.jobs import SelectMaker

    calm, hot, reference = _two_structures(np.random.default_rng(7))
    novelty = SelectMaker(n_select=4, method="entropy", per_structure=False)
    out = novelty.make.original(novelty, [calm, hot], [reference], structure_indices=[0, 1])
    # entropy alone spends every label on the novel structure and never tests the other
    hot_positions = {tuple(np.round(f.positions, 6).ravel()) for f in hot}
    assert all(tuple(np.round(f.positions, 6).ravel()) in hot_positions for f in out.dataset)
    assert out.n_selected_per_structure is None

    shared = SelectMaker(n_select=4, method="entropy")  # per_structure is the default
    out = shared.make.original(shared, [calm, hot], [reference], structure_indices=[0, 1])
    picked = [tuple(np.round(f.positions, 6).ravel()) in hot_positions for f in out.dataset]
    assert out.n_selected_per_structure == [2, 2] and sum(picked) == 2 and out.n_selected == 4
    # each share is the entropy pick within its structure: the calm structure's two most novel frames
    two = SelectMaker(n_select=2, method="entropy")
    alone = two.make.original(two, [calm], [reference])
    calm_picks = [f for f, is_hot in zip(out.dataset, picked) if not is_hot]
    np.testing.assert_allclose([f.positions for f in calm_picks], [f.positions for f in alone.dataset])
    assert len(out.dh) == 4 and out.selected_entropy > 0

    # a structure with fewer candidates than its share passes the rest on; random selection shares too
    rand = SelectMaker(n_select=5, method="random", seed=3)
    out = rand.make.original(rand, [calm.subset([0]), hot], [], structure_indices=[0, 1])
    assert out.n_selected_per_structure == [1, 4] and out.n_selected == 5
    with pytest.raises(ValueError, match="structure_indices has 1 entries for 2 candidates"):
        rand.make.original(rand, [calm, hot], [], structure_indices=[0])


def test_per_structure_must_be_a_bool():
    from pfd_atomate.select.jobs import SelectMaker

    with pytest.raises(ValueError, match="SelectMaker.per_structure must be true or false, got 1"):
        SelectMaker(per_structure=1)


def test_entropy_selection_leaves_the_openmp_thread_count_of_the_process_alone():
    """quests runs on numba, whose OpenMP layer sets every core's threads and leaves them; torch shares that
    runtime, so every MD step after a selection in the same worker ran 19x slower (select.entropy)."""
    torch = pytest.importorskip("torch")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: numba's thread count is the budget anyway")
    rng = np.random.default_rng(5)
    candidates = Dataset(frames=[si_frame(rng, 0.1) for _ in range(6)])
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a single-threaded worker (OMP_NUM_THREADS=1)
    try:
        entropy_select(candidates, 2)
        dataset_entropy(candidates)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
