"""CHGNet backend: per-element energy re-referencing, fine-tuning, model files, atomate2 MD.

Labels come from real calculators: EMT on fcc Cu (a different potential from CHGNet, shifted
by -50 eV/atom as a DFT code's pseudopotential reference would be) and pretrained CHGNet
itself with per-element shifts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("chgnet")

from _labelled_data import emt_dataset  # noqa: E402
from ase.build import bulk  # noqa: E402

from pfd_atomate.data import Dataset, Frame, ModelFile  # noqa: E402
from pfd_atomate.data.models import sha256_of_file  # noqa: E402
from pfd_atomate.train import chgnet as chgnet_backend  # noqa: E402
from pfd_atomate.train.chgnet import (  # noqa: E402
    CALCULATOR_PATH,
    CHGNetBackend,
    FineTunedCHGNetCalculator,
    frame_sampling_weights,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

CU_SHIFT = -50.0  # eV/atom added to the EMT labels


def shifted(dataset: Dataset, per_element: dict[str, float]) -> Dataset:
    """Copy of ``dataset`` with ``per_element[e]`` eV added to the energy per atom of element e."""
    frames = [
        f.model_copy(update={"energy": f.energy + sum(per_element[s] for s in f.species)}) for f in dataset.frames
    ]
    return Dataset(frames=frames, name=dataset.name)


def errors(pred: Dataset, ref: Dataset) -> dict[str, float]:
    """RMSE of energy (eV/atom), its offset-free part (std, eV/atom), forces (eV/Å), virial/atom (eV)."""
    de = np.array([(p.energy - r.energy) / p.n_atoms for p, r in zip(pred, ref, strict=True)])
    df = np.concatenate([np.asarray(p.forces) - np.asarray(r.forces) for p, r in zip(pred, ref, strict=True)])
    dv = np.array([(np.asarray(p.virial) - np.asarray(r.virial)) / p.n_atoms for p, r in zip(pred, ref, strict=True)])
    return {
        "energy": float(np.sqrt(np.mean(de**2))),
        "energy_offset_free": float(np.std(de)),
        "forces": float(np.sqrt(np.mean(df**2))),
        "virial": float(np.sqrt(np.mean(dv**2))),
    }


@pytest.fixture(scope="module")
def cu_data():
    """8-atom fcc Cu frames labelled with EMT, energies shifted by CU_SHIFT eV/atom."""
    train = shifted(emt_dataset(12, seed=1, supercell=(2, 1, 1)), {"Cu": CU_SHIFT})
    test = shifted(emt_dataset(8, seed=2, supercell=(2, 1, 1)), {"Cu": CU_SHIFT})
    return train, test


@pytest.fixture(scope="module")
def finetuned(cu_data, tmp_path_factory, request):
    """(backend, ModelFile) of CHGNet fine-tuned on the Cu training frames (~15-30 s)."""
    # one thread: on a shared 2-core machine two threads per process oversubscribe the cores
    backend = CHGNetBackend(
        epochs=4, learning_rate=3e-3, batch_size=2, energy_loss_weight=10.0, use_stress=True, n_threads=1, seed=0
    )
    model = backend.train([cu_data[0]], tmp_path_factory.mktemp("chgnet-train"))
    return backend, model


@pytest.fixture
def _restore_torch_threads():
    """The calculator sets torch threads process-wide; undo that after the test."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_check_elements():
    backend = CHGNetBackend()
    backend.check_elements(["H", "Si", "Pu"])
    with pytest.raises(ValueError, match="Am"):
        backend.check_elements(["Si", "Am"])  # Z = 95, beyond CHGNet's embedding
    with pytest.raises(ValueError, match="unknown"):
        backend.check_elements(["Xx"])
    other = ModelFile(backend="deepmd", filename="m.pth", sha256="0" * 64, size_bytes=0, content_b64="")
    with pytest.raises(ValueError, match="deepmd"):
        backend.check_elements(["Si"], other)


def test_bad_inputs_fail_before_any_model_is_loaded(monkeypatch, tmp_path, cu_data):
    from chgnet.model import CHGNet

    def no_loading(*args, **kwargs):
        raise AssertionError("a CHGNet model was loaded before the input was validated")

    monkeypatch.setattr(CHGNet, "load", no_loading)
    monkeypatch.setattr(CHGNet, "from_file", no_loading)
    backend = CHGNetBackend(epochs=1)
    good = cu_data[0].subset([0, 1])

    with pytest.raises(ValueError, match="empty"):
        backend.train([], tmp_path)
    with pytest.raises(ValueError, match="empty"):
        backend.train([Dataset()], tmp_path)
    unlabelled = Dataset(frames=[good[0], good[1].without_labels()], name="half")
    with pytest.raises(ValueError, match=r"'half'.*\[1\].*no energy"):
        backend.train([unlabelled], tmp_path)
    no_virial = Dataset(frames=[f.model_copy(update={"virial": None}) for f in good])
    with pytest.raises(ValueError, match="virial"):
        CHGNetBackend(use_stress=True).train([no_virial], tmp_path)
    with pytest.raises(ValueError, match="weights"):
        backend.train([good], tmp_path, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        backend.train([good, good], tmp_path, weights=[1.0, 0.0])
    americium = Dataset(frames=[good[0].model_copy(update={"species": ["Am"] * good[0].n_atoms})])
    with pytest.raises(ValueError, match="Am"):
        backend.train([americium], tmp_path)
    molecule = Dataset(frames=[good[0].model_copy(update={"pbc": (False, False, False)})])
    with pytest.raises(ValueError, match="periodic"):
        backend.train([molecule], tmp_path)
    with pytest.raises(ValueError, match="not periodic"):
        backend.predict(None, molecule)
    slab = Dataset(frames=[good[0].model_copy(update={"pbc": (True, True, False)})])
    with pytest.raises(ValueError, match="not periodic"):
        backend.predict(None, slab)
    with pytest.raises(FileNotFoundError, match="base_model"):
        CHGNetBackend(base_model=str(tmp_path / "missing.pth.tar")).train([good], tmp_path)
    deepmd_model = ModelFile(backend="deepmd", filename="m.pth", sha256="0" * 64, size_bytes=0, content_b64="")
    with pytest.raises(ValueError, match="deepmd"):
        backend.train([good], tmp_path, init_model=deepmd_model)
    for bad in ({"epochs": -1}, {"batch_size": 0}, {"learning_rate": 0.0}, {"force_loss_weight": -1.0}):
        with pytest.raises(ValueError):
            CHGNetBackend(**bad)


def test_virial_convention_matches_energy_derivative():
    """virial = -dE/dε (eV) for the predicted labels, checked by finite strain differences."""
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)  # compressed: non-zero virial
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    backend = CHGNetBackend(n_threads=1)
    h = 2e-3
    strained = []
    for i, j in [(0, 0), (0, 1)]:
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = sign * h
            a = atoms.copy()
            a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            strained.append(Frame.from_atoms(a, with_labels=False))
    pred = backend.predict(None, Dataset(frames=[Frame.from_atoms(atoms, with_labels=False), *strained]))
    virial = np.asarray(pred[0].virial)
    e = [f.energy for f in pred.frames[1:]]
    assert abs(virial[0, 0]) > 0.5  # the check below is not trivially 0 = 0
    np.testing.assert_allclose(-(e[0] - e[1]) / (2 * h), virial[0, 0], atol=0.02)
    # a symmetric shear strain h moves both ε_xy and ε_yx: dE/dh = -(W_xy + W_yx)
    np.testing.assert_allclose(-(e[2] - e[3]) / (2 * h), 2 * virial[0, 1], atol=0.02)


def _si_ge_frames(n_ge_list, seed):
    rng = np.random.default_rng(seed)
    frames = []
    for n_ge in n_ge_list:
        atoms = bulk("Si", "diamond", a=5.5, cubic=True)
        symbols = np.array(["Si"] * len(atoms))
        symbols[rng.choice(len(atoms), n_ge, replace=False)] = "Ge"
        atoms.set_chemical_symbols(symbols)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(Frame.from_atoms(atoms, with_labels=False))
    return Dataset(frames=frames)


def test_rereferencing_fits_per_element_offsets(tmp_path):
    """Labels = pretrained CHGNet + CP2K-like per-element offsets; epochs=0 only re-fits AtomRef."""
    from chgnet.model import CHGNet

    offsets = {"Si": -100.0, "Ge": -60.0}
    pretrained = CHGNetBackend(n_threads=1)
    train = shifted(pretrained.predict(None, _si_ge_frames([0, 0, 2, 4, 4], seed=1)), offsets)
    test = shifted(pretrained.predict(None, _si_ge_frames([1, 6, 8], seed=2)), offsets)  # unseen compositions

    model = CHGNetBackend(epochs=0, n_threads=1).train([train], tmp_path / "reref")
    assert model.type_map == ["Ge", "Si"] and model.kind == "finetuned"
    err = errors(pretrained.predict(model, test), test)
    assert err["energy"] < 1e-3  # eV/atom, float32 round-off on -100 eV/atom totals
    assert err["forces"] < 1e-4  # reference energies are constants: forces untouched

    base_ref = CHGNet.load(verbose=False, use_device="cpu").composition_model.fc.weight[0].detach().numpy()
    new_ref = CHGNet.from_file(str(model.materialize())).composition_model.fc.weight[0].detach().numpy()
    shift = new_ref - base_ref
    np.testing.assert_allclose(shift[[13, 31]], [offsets["Si"], offsets["Ge"]], atol=2e-3)  # Z-1 of Si, Ge
    assert np.all(shift[[0, 7, 28]] == 0)  # H, O, Cu: elements not in the data keep their references

    # without re-referencing the offset stays in the energies
    plain = CHGNetBackend(epochs=0, rereference_energies=False, n_threads=1).train([train], tmp_path / "plain")
    assert errors(pretrained.predict(plain, test), test)["energy"] > 50


def test_finetuning_lowers_heldout_errors(cu_data, finetuned):
    train, test = cu_data
    backend, model = finetuned
    before = errors(backend.predict(None, test), test)
    after = errors(backend.predict(model, test), test)
    assert before["energy"] > 40  # the -50 eV/atom label offset
    assert after["energy"] < 5e-3
    assert after["energy_offset_free"] < 0.5 * before["energy_offset_free"]
    assert after["forces"] < 0.5 * before["forces"]
    assert after["virial"] < 0.5 * before["virial"]

    pretrained_file = chgnet_backend.pretrained_checkpoint()
    assert model.backend == "chgnet" and model.type_map == ["Cu"] and model.kind == "finetuned"
    assert model.parent_sha256 == sha256_of_file(pretrained_file)


@pytest.mark.usefixtures("_restore_torch_threads")
def test_model_file_round_trip_gives_identical_predictions(cu_data, finetuned, tmp_path, monkeypatch):
    from chgnet.model import CHGNet

    backend, model = finetuned
    test = cu_data[1].subset([0, 1, 2])
    first = backend.predict(model, test)

    restored = ModelFile.model_validate(json.loads(model.model_dump_json()))
    monkeypatch.setenv("PFD_MODEL_CACHE", str(tmp_path / "other-worker"))
    path = restored.materialize()  # another path: a fresh calculator, loaded from the new file
    assert path.parent.parent == tmp_path / "other-worker"
    second = backend.predict(restored, test)
    for a, b in zip(first, second, strict=True):
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
        np.testing.assert_array_equal(a.virial, b.virial)

    CHGNet.from_file(str(path))  # a plain chgnet checkpoint
    atoms = test[0].to_atoms(with_labels=False)
    atoms.calc = backend.calculator(restored)
    assert isinstance(atoms.calc, FineTunedCHGNetCalculator)
    assert atoms.get_potential_energy() == pytest.approx(first[0].energy, abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), first[0].forces, atol=1e-5)


@pytest.mark.usefixtures("_restore_torch_threads")
def test_atomate2_md_runs_with_the_finetuned_calculator(finetuned):
    from atomate2.forcefields.md import ForceFieldMDMaker

    backend, model = finetuned
    name, kwargs = backend.force_field_spec(model)
    assert kwargs["model"] == str(model.materialize())
    structure = emt_dataset(1, seed=3, supercell=(2, 1, 1))[0].to_structure()
    expected = backend.predict(model, Dataset(frames=[Frame.from_structure(structure)]))[0].energy

    maker = ForceFieldMDMaker(force_field_name=name, calculator_kwargs=kwargs, n_steps=20, temperature=300)
    assert maker.calculator_meta == CALCULATOR_PATH  # what atomate2's ase_calculator imports
    assert ForceFieldMDMaker.from_dict(maker.as_dict()).calculator_meta == CALCULATOR_PATH  # job-document round trip
    result = maker.run_ase(structure)
    energies = [frame_props["energy"] for frame_props in result.trajectory.frame_properties]
    assert len(energies) == 21
    # the fine-tuned model (energies near -50 eV/atom), not the pretrained CHGNet, drives the MD
    assert energies[0] == pytest.approx(expected, abs=1e-3)
    assert np.isfinite(energies).all() and np.ptp(energies) < 0.5 * len(structure)


def test_dataset_weights_set_the_share_of_each_dataset(cu_data, tmp_path):
    p = frame_sampling_weights([4, 0, 2], [1.0, 5.0, 3.0])
    assert p.shape == (6,)
    assert p[:4].sum() == pytest.approx(0.25) and p[4:].sum() == pytest.approx(0.75)
    np.testing.assert_allclose(p[:4], p[0])  # uniform within a dataset

    old, new = cu_data[0].subset([0, 1, 2, 3]), cu_data[0].subset([4, 5])
    model = CHGNetBackend(epochs=1, batch_size=3, n_threads=1).train([old, new], tmp_path, weights=[1.0, 3.0])
    assert model.type_map == ["Cu"]


def test_continue_from_previous_iteration(cu_data, finetuned, tmp_path):
    """init_model (not the pretrained CHGNet) is the starting point of the next iteration."""
    backend, model = finetuned
    test = cu_data[1].subset([0, 1])
    again = CHGNetBackend(epochs=0, n_threads=1).train([cu_data[0]], tmp_path, init_model=model)
    assert again.parent_sha256 == model.sha256
    before, after = backend.predict(model, test), backend.predict(again, test)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-6)  # same network
        assert abs(a.energy - b.energy) / a.n_atoms < 2e-3  # references re-fitted on the same data
