"""deepmd-kit trainer backend: training from scratch, restart, fine-tuning, inference, bad input.

Labels come from ASE's EMT potential for fcc Cu (tests/_labelled_data.py), so a model
that trains must learn a real potential-energy surface.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest

pytest.importorskip("deepmd.pt")

from _labelled_data import emt_dataset  # noqa: E402

from pfd_atomate.data import Dataset, ModelFile  # noqa: E402
from pfd_atomate.data.frames import virial_to_stress  # noqa: E402
from pfd_atomate.train.deepmd import DeepMDBackend, checkpoint_from_frozen, read_type_map  # noqa: E402

# one thread: on the shared 2-core machine two OpenMP threads per process thrash (measured 10-30x slower)
THREADS = 1


def force_rmse(pred: Dataset, ref: Dataset) -> float:
    """Force RMSE over all components, eV/Å."""
    p = np.concatenate([np.asarray(f.forces) for f in pred])
    r = np.concatenate([np.asarray(f.forces) for f in ref])
    return float(np.sqrt(np.mean((p - r) ** 2)))


def zero_force_rmse(ref: Dataset) -> float:
    """Force RMSE of predicting zero force on every atom, eV/Å."""
    return float(np.sqrt(np.mean(np.concatenate([np.asarray(f.forces) for f in ref]) ** 2)))


@pytest.fixture(scope="module")
def cu_test() -> Dataset:
    return emt_dataset(10, seed=99)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """se_e2_a trained from scratch on 20 EMT Cu frames (32 atoms), 300 steps."""
    backend = DeepMDBackend(template="se_e2_a", numb_steps=300, rcut=5.0, n_threads=THREADS)
    workdir = tmp_path_factory.mktemp("se_e2_a")
    t0 = time.perf_counter()
    model = backend.train([emt_dataset(20, seed=0)], workdir)
    print(f"se_e2_a from scratch, 300 steps incl. freeze: {time.perf_counter() - t0:.1f} s")
    return backend, model, workdir


def test_scratch_se_e2_a_learns_forces(scratch, cu_test):
    backend, model, workdir = scratch
    assert (model.backend, model.kind, model.type_map, model.parent_sha256) == ("deepmd", "scratch", ["Cu"], None)
    assert (workdir / "lcurve.out").is_file()

    pred = backend.predict(model, cu_test)
    assert len(pred) == len(cu_test)
    for f_pred, f_ref in zip(pred, cu_test, strict=True):
        assert f_pred.positions == f_ref.positions
        assert np.asarray(f_pred.forces).shape == (32, 3)
        assert np.asarray(f_pred.virial).shape == (3, 3)
    rmse, baseline = force_rmse(pred, cu_test), zero_force_rmse(cu_test)
    print(f"force RMSE {rmse:.3f} eV/Å vs zero-force {baseline:.3f} eV/Å")
    assert rmse < 0.5 * baseline
    # EMT Cu cohesive-energy offsets are ~0.01-0.1 eV/atom: a unit or per-frame mix-up would be far off
    e_err = pred.energies_per_atom() - cu_test.energies_per_atom()
    assert np.max(np.abs(e_err)) < 0.2


def test_energy_bias_refitted_after_training_from_scratch(scratch):
    """The force-dominated loss lets a student's mean energy drift; the re-fitted per-element bias
    (``dp change-bias``) makes its mean per-atom error on the training labels zero (one element)."""
    backend, model, workdir = scratch
    assert (workdir / "dp_change_bias.log").is_file()
    train = emt_dataset(20, seed=0)
    e_err = backend.predict(model, train).energies_per_atom() - train.energies_per_atom()
    assert abs(float(np.mean(e_err))) < 1e-5, f"mean energy error {np.mean(e_err):.2e} eV/atom"
    assert float(np.std(e_err)) > 1e-5  # the model itself is not an exact copy: only the constant went


def test_predict_units_against_finite_differences(scratch):
    """Forces are -dE/dx and the virial is -dE/dε (eV) of the same model, frame by frame."""
    backend, model, _ = scratch
    frame = emt_dataset(1, seed=5)[0]
    h = 1e-3
    pos = np.asarray(frame.positions)
    cell = np.asarray(frame.cell)
    shifted = []
    for sign in (1, -1):
        p = pos.copy()
        p[3, 1] += sign * h
        shifted.append(frame.model_copy(update={"positions": p.tolist()}))
    for sign in (1, -1):  # strain ε_xx: r -> r (1 + ε), cell likewise
        deform = np.eye(3) + np.diag([sign * h, 0, 0])
        strained = {"positions": (pos @ deform).tolist(), "cell": (cell @ deform).tolist()}
        shifted.append(frame.model_copy(update=strained))
    # an 8-atom frame in between checks that frames of different formulas keep their order
    small = emt_dataset(1, seed=6, supercell=(2, 2, 2), cubic=False)[0]
    pred = backend.predict(model, Dataset(frames=[frame, shifted[0], small, shifted[1], shifted[2], shifted[3]]))
    e = [f.energy for f in pred]
    f_y = np.asarray(pred[0].forces)[3, 1]
    assert f_y == pytest.approx(-(e[1] - e[3]) / (2 * h), abs=2e-3)
    v_xx = np.asarray(pred[0].virial)[0, 0]
    assert v_xx == pytest.approx(-(e[4] - e[5]) / (2 * h), rel=1e-2, abs=2e-3)
    assert np.asarray(pred[2].forces).shape == (8, 3)
    single = backend.predict(model, Dataset(frames=[small]))
    np.testing.assert_allclose(pred[2].forces, single[0].forces, atol=1e-10)


def test_frozen_model_round_trip_and_calculator(scratch, cu_test, tmp_path):
    """A materialized copy gives the same predictions through the ASE calculator."""
    from deepmd.calculator import DP

    backend, model, _ = scratch
    copy = model.materialize(tmp_path / "elsewhere")
    assert ModelFile.from_path(copy, backend="deepmd").sha256 == model.sha256
    assert read_type_map(copy) == ["Cu"]

    pred = backend.predict(model, cu_test.subset([0, 1]))
    for frame, ref in zip(pred, cu_test.subset([0, 1]), strict=True):
        atoms = ref.to_atoms(with_labels=False)
        atoms.calc = DP(model=str(copy))
        assert atoms.get_potential_energy() == pytest.approx(frame.energy, abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), frame.forces, atol=1e-8)
        # the calculator's stress is -sym(virial)/V: same sign convention as Frame.virial
        stress = virial_to_stress(np.asarray(frame.virial), atoms.get_volume())
        np.testing.assert_allclose(atoms.get_stress(voigt=False), 0.5 * (stress + stress.T), atol=1e-8)

    name, kwargs = backend.force_field_spec(model)
    assert name == "DeepMD" and read_type_map(kwargs["model"]) == ["Cu"]
    assert backend.calculator(model).dp.get_type_map() == ["Cu"]


def test_large_cells_use_the_linear_neighbour_list(scratch):
    """Inference builds neighbour lists with vesin (O(N)), not deepmd-kit's all-pairs fallback that needs
    >14 GB at 4096 atoms, and both give the same energy, forces and virial on a 500-atom cell."""
    from ase.build import bulk
    from deepmd.infer import DeepPot

    backend, model, _ = scratch
    assert type(backend.calculator(model).dp.deep_eval._nlist_builder).__name__ == "VesinNeighborList"

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(5)  # 500 atoms, 18 Å box: many cells for vesin
    atoms.rattle(0.1, seed=3)
    path = str(model.materialize())
    args = (atoms.positions.reshape(1, -1), atoms.cell.array.reshape(1, 9), [0] * len(atoms))
    linear = DeepPot(path).eval(*args)[:3]
    dense = DeepPot(path, nlist_backend="native").eval(*args)[:3]
    assert np.abs(linear[1]).max() > 0.05  # rattled: the forces are not trivially zero
    for a, b in zip(linear, dense, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_checkpoint_from_frozen_is_the_same_model(scratch, cu_test, tmp_path):
    """`--finetune` needs a .pt: the checkpoint rebuilt from the frozen model predicts identically."""
    from deepmd.infer import DeepPot

    backend, model, _ = scratch
    ckpt = checkpoint_from_frozen(model.materialize(tmp_path), tmp_path / "rebuilt.pt")
    assert read_type_map(ckpt) == ["Cu"]
    frames = cu_test.subset([0, 1, 2])
    coords = np.array([f.positions for f in frames]).reshape(3, -1)
    cells = np.array([f.cell for f in frames]).reshape(3, 9)
    e_ckpt, f_ckpt = DeepPot(str(ckpt)).eval(coords, cells, [0] * 32)[:2]
    pred = backend.predict(model, frames)
    np.testing.assert_allclose(e_ckpt[:, 0], [f.energy for f in pred], atol=1e-8)
    np.testing.assert_allclose(f_ckpt, np.array([f.forces for f in pred]), atol=1e-8)


def test_model_definition_is_read_once_per_file_version(scratch, tmp_path, monkeypatch):
    """predict() asks for the type map of a model given without one on every call: the file is loaded
    once (120 ms for a frozen student), again only when it changed."""
    import os
    import shutil

    import torch

    _, model, _ = scratch
    path = tmp_path / "m.pth"
    shutil.copy(model.materialize(tmp_path / "src"), path)
    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    assert read_type_map(path) == read_type_map(path) == ["Cu"]
    assert len(loads) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert read_type_map(path) == ["Cu"] and len(loads) == 2
    # the cached definition is the caller's own copy: changing it changes nothing for the next caller
    from pfd_atomate.train.deepmd import _load_model_params

    _load_model_params(path)["type_map"].append("Xx")
    assert read_type_map(path) == ["Cu"] and len(loads) == 2


def test_restart_from_previous_model(scratch, cu_test, tmp_path, monkeypatch):
    """init_model (previous iteration's frozen model) is fine-tuned, not re-initialised; the frozen model is
    rebuilt into a checkpoint once per training."""
    import pfd_atomate.train.deepmd as deepmd_module

    rebuilt = []
    original = deepmd_module.checkpoint_from_frozen
    monkeypatch.setattr(deepmd_module, "checkpoint_from_frozen", lambda *a: rebuilt.append(a) or original(*a))
    backend, model, _ = scratch
    rmse_before = force_rmse(backend.predict(model, cu_test), cu_test)
    # 20 steps at a small learning rate: a randomly initialised model would stay near the zero-force error
    restart = DeepMDBackend(numb_steps=20, start_lr=1e-4, stop_lr=1e-5, n_threads=THREADS)
    new = restart.train([emt_dataset(5, seed=7)], tmp_path, init_model=model)
    assert len(rebuilt) == 1
    assert (new.kind, new.parent_sha256, new.type_map) == ("finetuned", model.sha256, ["Cu"])
    assert new.sha256 != model.sha256
    rmse_after = force_rmse(restart.predict(new, cu_test), cu_test)
    print(f"restart: force RMSE {rmse_before:.3f} -> {rmse_after:.3f} eV/Å")
    assert rmse_after < 1.5 * rmse_before
    assert rmse_after < 0.5 * zero_force_rmse(cu_test)
    assert (tmp_path / "init_model" / "from_frozen.pt").is_file()  # the frozen M_i was rebuilt for --finetune


def test_weights_become_auto_prob(tmp_path):
    """Per-dataset weights map onto consecutive blocks of deepmd systems."""
    old = Dataset.concat([emt_dataset(3, seed=1), emt_dataset(2, seed=2, supercell=(2, 2, 2), cubic=False)])
    new = emt_dataset(4, seed=3)
    overrides = {"training": {"disp_freq": 7}, "model": {"fitting_net": {"neuron": [8]}}}
    backend = DeepMDBackend(numb_steps=10, input_overrides=overrides, use_virial=False)
    config = backend.write_inputs([old, Dataset(), new], tmp_path, weights=[1.0, 5.0, 3.0])
    systems = config["training"]["training_data"]["systems"]
    assert len(systems) == 3  # old: Cu32 + Cu8, the empty dataset is skipped, new: Cu32
    assert config["training"]["training_data"]["auto_prob"] == "prob_sys_size;0:2:1;2:3:3"
    assert config["training"]["disp_freq"] == 7 and config["model"]["fitting_net"]["neuron"] == [8]
    assert config["model"]["fitting_net"]["type"] == "ener"  # deep merge keeps the rest
    assert config["loss"]["limit_pref_v"] == 0.0
    assert json.loads((tmp_path / "input.json").read_text()) == config
    n_frames = [np.load(tmp_path / s / "set.000" / "energy.npy").shape[0] for s in systems]
    assert sorted(n_frames[:2]) == [2, 3] and n_frames[2] == 4
    assert not any((tmp_path / s / "set.000" / "virial.npy").exists() for s in systems)

    with_virial = DeepMDBackend().write_inputs([new], tmp_path / "v")  # the virial is trained by default
    assert with_virial["loss"]["limit_pref_v"] > 0
    assert (tmp_path / "v" / with_virial["training"]["training_data"]["systems"][0] / "set.000" / "virial.npy").exists()

    # one frame without a virial: all are trained without (dpdata cannot mix), not an error
    mixed = Dataset(frames=[new[0].model_copy(update={"virial": None}), *new.frames[1:]])
    without = DeepMDBackend().write_inputs([mixed], tmp_path / "nv")
    assert without["loss"]["limit_pref_v"] == 0.0


def test_bad_input_fails_before_dp(scratch, tmp_path, monkeypatch):
    _, model, workdir = scratch

    def no_dp(*args, **kwargs):
        raise AssertionError("dp must not run on bad input")

    monkeypatch.setattr(DeepMDBackend, "_run_dp", no_dp)
    cu_base = DeepMDBackend(base_model=str(workdir / "frozen_model.pth"))
    ag = emt_dataset(2, seed=0, element="Ag")
    with pytest.raises(ValueError, match=r"\['Ag'\]"):
        cu_base.train([ag], tmp_path / "ag")
    with pytest.raises(ValueError, match=r"\['Ag'\]"):
        cu_base.check_elements(["Cu", "Ag"])
    cu_base.check_elements(["Cu"])
    with pytest.raises(ValueError, match=r"\['Ag'\]"):
        DeepMDBackend().train([ag], tmp_path / "ag2", init_model=model)
    with pytest.raises(ValueError, match=r"\['Ag'\]"):
        DeepMDBackend().check_elements(["Ag"], model)
    with pytest.raises(FileNotFoundError):
        DeepMDBackend(base_model=str(tmp_path / "missing.pt")).train([emt_dataset(2, seed=0)], tmp_path / "m")
    # restarting from the previous model does not need the base model on this worker
    config = DeepMDBackend(base_model=str(tmp_path / "missing.pt")).write_inputs(
        [emt_dataset(2, seed=0)], tmp_path / "r", init_model=model
    )
    assert config["model"]["type_map"] == ["Cu"]
    with pytest.raises(ValueError, match="empty"):
        DeepMDBackend().train([Dataset()], tmp_path / "e")
    with pytest.raises(ValueError, match="labels"):
        DeepMDBackend().train([Dataset(frames=[emt_dataset(1, seed=0)[0].without_labels()])], tmp_path / "u")
    with pytest.raises(ValueError, match="weights"):
        DeepMDBackend().train([emt_dataset(2, seed=0)], tmp_path / "w", weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="single-task"):
        DeepMDBackend(base_model=str(workdir / "frozen_model.pth"), model_branch="H2O").train(
            [emt_dataset(2, seed=0)], tmp_path / "b"
        )
    other = model.model_copy(update={"backend": "chgnet"})
    with pytest.raises(ValueError, match="chgnet"):
        DeepMDBackend().predict(other, emt_dataset(1, seed=0))
    slab = Dataset(frames=[emt_dataset(1, seed=0)[0].model_copy(update={"pbc": (True, True, False)})])
    with pytest.raises(ValueError, match=r"frames \[0\] are periodic along some cell vectors only"):
        DeepMDBackend().predict(model, slab)


def test_dp_failure_raises_with_log_tail(tmp_path):
    """A dp error surfaces as RuntimeError carrying dp's own message."""
    backend = DeepMDBackend(numb_steps=5, input_overrides={"model": {"descriptor": {"type": "no_such_descriptor"}}})
    with pytest.raises(RuntimeError, match="no_such_descriptor"):
        backend.train([emt_dataset(2, seed=0)], tmp_path)


def test_finetune_tiny_dpa2_foundation(tmp_path):
    """PFD fine-tuning: a pretrained (tiny) DPA-2 adapts to a shifted distribution with few frames.

    "Foundation": DPA-2 pretrained on near-equilibrium 8-atom Cu cells. Target: hot, strongly
    strained 32-atom cells. After fine-tuning on 10 target frames the error on held-out
    target frames must drop below the foundation's and below the same-steps training from
    scratch (PFD paper: fine-tuning beats training from scratch at small data).
    """
    pretrain = emt_dataset(30, seed=0, supercell=(2, 2, 2), cubic=False)
    target = emt_dataset(10, seed=1, displacement=0.12, strain=0.04)
    test = emt_dataset(8, seed=2, displacement=0.12, strain=0.04)

    t0 = time.perf_counter()
    foundation = DeepMDBackend(
        template="dpa2", numb_steps=200, batch_size=1, rcut=5.0, n_threads=THREADS
    ).train([pretrain], tmp_path / "pretrain")
    t1 = time.perf_counter()
    base_path = foundation.materialize(tmp_path / "foundation")
    finetuner = DeepMDBackend(base_model=str(base_path), numb_steps=60, n_threads=THREADS)
    finetuned = finetuner.train([target], tmp_path / "finetune")
    t2 = time.perf_counter()
    scratch = DeepMDBackend(template="dpa2", numb_steps=60, rcut=5.0, n_threads=THREADS)
    from_scratch = scratch.train([target], tmp_path / "scratch")
    t3 = time.perf_counter()
    print(f"DPA-2 pretrain 200 steps {t1 - t0:.1f} s, fine-tune 60 steps {t2 - t1:.1f} s, scratch {t3 - t2:.1f} s")

    assert (finetuned.kind, finetuned.parent_sha256, finetuned.type_map) == ("finetuned", foundation.sha256, ["Cu"])
    ft_config = json.loads((tmp_path / "finetune" / "out.json").read_text())
    assert ft_config["model"]["descriptor"]["type"] == "dpa2"  # architecture taken from the foundation

    rmse = {name: force_rmse(finetuner.predict(m, test), test)
            for name, m in [("foundation", foundation), ("finetuned", finetuned), ("scratch", from_scratch)]}
    print("force RMSE on held-out target frames (eV/Å):", rmse, "zero-force:", zero_force_rmse(test))
    assert rmse["finetuned"] < rmse["foundation"]
    assert rmse["finetuned"] < rmse["scratch"]


@pytest.mark.parametrize("template", ["se_e2_a", "se_atten_v2", "dpa2"])
def test_templates_pass_deepmd_argcheck(template):
    """Every template is a valid deepmd-kit input (checked by deepmd's own schema)."""
    from deepmd.utils.argcheck import normalize

    from pfd_atomate.train.deepmd_templates import build_input

    config = build_input(
        template, type_map=["Cu", "Ag"], systems=["data/000/Cu32"], numb_steps=100, batch_size="auto",
        start_lr=1e-3, stop_lr=1e-5, rcut=5.0, rcut_smth=0.5, sel="auto", seed=3, disp_freq=10,
        save_freq=100, use_virial=True,
    )
    normalized = normalize(config)
    assert normalized["model"]["descriptor"]["type"] == template
    assert normalized["learning_rate"]["decay_steps"] == 1


#: a se_e2_a + se_e3 (three-body embedding) hybrid descriptor, small enough to train in seconds
HYBRID = {"type": "hybrid", "list": [
    {"type": "se_e2_a", "rcut": 4.5, "rcut_smth": 0.5, "sel": "auto", "neuron": [4, 8], "axis_neuron": 4},
    {"type": "se_e3", "rcut": 3.5, "rcut_smth": 0.5, "sel": "auto", "neuron": [2, 4], "seed": 7}]}


def test_descriptor_of_another_type_replaces_the_templates(tmp_path):
    """An ``input_overrides`` descriptor of another type (a hybrid) replaces the template's descriptor whole, gets
    the backend's seed where it sets none and passes deepmd-kit's strict input check (the template's ``rcut`` left
    beside ``list`` would fail it); one of the template's type still merges key by key. The default student
    leaves its descriptor sizes out of a hybrid and keeps its fitting net."""
    from deepmd.utils.argcheck import normalize

    from pfd_atomate.presets import STUDENT_NETS, se_e2_a_student
    from pfd_atomate.train.deepmd import can_compress

    data = emt_dataset(2, seed=4)
    config = DeepMDBackend(seed=3, input_overrides={"model": {"descriptor": HYBRID}}).write_inputs([data], tmp_path)
    descriptor = config["model"]["descriptor"]
    assert set(descriptor) == {"type", "list"} and descriptor["type"] == "hybrid"
    assert [part["seed"] for part in descriptor["list"]] == [3, 7] and "seed" not in HYBRID["list"][0]
    normalize(copy.deepcopy(config))
    assert can_compress(config["model"])
    assert not can_compress({"descriptor": {"type": "hybrid", "list": [HYBRID["list"][0], {"type": "dpa2"}]}})

    same = DeepMDBackend(input_overrides={"model": {"descriptor": {"type": "se_e2_a", "rcut": 4.5}}})
    merged = same.write_inputs([data], tmp_path / "same")["model"]["descriptor"]
    assert merged["rcut"] == 4.5 and merged["axis_neuron"] == 8  # the template's other keys stay

    student = se_e2_a_student(input_overrides={"model": {"descriptor": HYBRID}})
    assert student.input_overrides["model"] == {"descriptor": HYBRID,
                                                "fitting_net": STUDENT_NETS["model"]["fitting_net"]}
    assert se_e2_a_student(input_overrides={"model": {"descriptor": {"rcut": 7.0}}}).input_overrides["model"][
        "descriptor"] == STUDENT_NETS["model"]["descriptor"] | {"rcut": 7.0}


def test_cutoff_is_the_trained_descriptors():
    """``DeepMDBackend.cutoff`` is the cutoff of the descriptor it will train: the template's, ``rcut``, an
    ``input_overrides`` rcut (which wins, as in the written input), the largest part of a hybrid, DPA-2's repinit
    (not its shorter repformer); unknown (None) for a fine-tune of a pre-trained model."""
    from pfd_atomate.presets import se_e2_a_student

    assert DeepMDBackend().cutoff == 6.0
    assert DeepMDBackend(rcut=7.0, rcut_smth=4.0).cutoff == 7.0
    assert DeepMDBackend(rcut=7.0, input_overrides={"model": {"descriptor": {"rcut": 5.5}}}).cutoff == 5.5
    assert DeepMDBackend(rcut=7.0, input_overrides={"model": {"descriptor": HYBRID}}).cutoff == 4.5
    assert DeepMDBackend(template="dpa2", rcut=5.0).cutoff == 5.0
    assert se_e2_a_student(rcut=6.5).cutoff == 6.5
    assert DeepMDBackend(base_model="dpa4-neo").cutoff is None


def test_hybrid_student_trains_and_compresses(cu_test, tmp_path):
    """A se_e2_a + se_e3 student trains from scratch, freezes and compresses (deepmd-kit tabulates both parts);
    the compressed model gives the frozen one's forces."""
    backend = DeepMDBackend(numb_steps=30, compress=True, input_overrides={"model": {"descriptor": HYBRID}},
                            n_threads=THREADS)
    model = backend.train([emt_dataset(4, seed=5)], tmp_path / "train")
    compressed = backend.compress_model(model, tmp_path / "compress")
    assert compressed is not None
    frames = cu_test.subset([0, 1])
    plain, tabulated = backend.predict(model, frames), backend.predict(compressed, frames)
    assert np.abs(np.array(plain.frames[0].forces)).max() > 1e-3  # a model that predicts something
    for a, b in zip(plain.frames, tabulated.frames, strict=True):
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-6)


def test_energy_weight_scales_energy_and_virial_prefactors_only(tmp_path):
    """``energy_weight`` multiplies the energy and virial loss prefactors of the input.json a backend
    writes for deepmd-kit; the force prefactors stay."""
    data = emt_dataset(2, seed=4)
    plain = DeepMDBackend().write_inputs([data], tmp_path / "plain")["loss"]
    heavy = DeepMDBackend(energy_weight=100.0).write_inputs([data], tmp_path / "heavy")["loss"]
    assert json.loads((tmp_path / "heavy" / "input.json").read_text())["loss"] == heavy
    for key in ("start_pref_e", "limit_pref_e", "start_pref_v", "limit_pref_v"):
        assert heavy[key] == pytest.approx(100 * plain[key]) and plain[key] > 0
    for key in ("start_pref_f", "limit_pref_f"):
        assert heavy[key] == plain[key]
    no_virial = DeepMDBackend(energy_weight=100.0, use_virial=False).write_inputs([data], tmp_path / "nv")["loss"]
    assert no_virial["start_pref_v"] == no_virial["limit_pref_v"] == 0.0


def test_read_type_map_of_multitask_checkpoint(tmp_path):
    """Branches (and their aliases) of a multi-task checkpoint carry their own type maps."""
    import torch

    params = {
        "model_dict": {
            "Alloy": {"type_map": ["Ag", "Cu", "Ni"], "model_branch_alias": ["metals"]},
            "Water": {"type_map": ["H", "O"]},
        }
    }
    path = tmp_path / "multitask.pt"
    torch.save({"model": {"_extra_state": {"model_params": params, "train_infos": {"step": 0}}}}, path)
    assert read_type_map(path, "Water") == ["H", "O"]
    assert read_type_map(path, "metals") == ["Ag", "Cu", "Ni"]
    assert read_type_map(path) == ["Ag", "Cu", "Ni"]  # deepmd's choice without a branch: the first
    with pytest.raises(ValueError, match="Polymer"):
        read_type_map(path, "Polymer")
    backend = DeepMDBackend(base_model=str(path), model_branch="Water")
    backend.check_elements(["O", "H"])
    with pytest.raises(ValueError, match=r"\['Cu'\]"):
        backend.check_elements(["Cu", "O"])
    with pytest.raises(FileNotFoundError):
        read_type_map(tmp_path / "nothing.pt")


def test_a_stored_model_runs_atomate2_makers(scratch, cu_test, memory_store, tmp_path):
    """run_with_model: atomate2's own static and MD jobs run the stored model; the output is atomate2's task
    document under the launcher's uuid, name and metadata, with the same energy as the backend's predict."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker
    from jobflow import Flow, run_locally
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.explore.frames import md_frames
    from pfd_atomate.explore.jobs import ExploreMaker
    from pfd_atomate.explore.schemas import TaskGroup
    from pfd_atomate.train.with_model import run_with_model

    backend, model, _ = scratch
    frame = cu_test.frames[0]
    structure = AseAtomsAdaptor.get_structure(frame.to_atoms(with_labels=False))
    static = run_with_model(ForceFieldStaticMaker(force_field_name="DeepMD"), backend, model, structure)
    static.name = "pfd static check"
    static.update_metadata({"pfd_step": "validate"})
    md = ExploreMaker(backend=backend).make(model, structure, 500.0,
                                            task_group=TaskGroup(temperatures=[500.0], n_steps=20, traj_interval=5),
                                            seed=1)
    run_locally(Flow([static, md]), store=memory_store, root_dir=tmp_path, create_folders=True, ensure_success=True,
                log=False)

    out = memory_store.get_output(static.uuid, load=True)
    assert out["@class"] == "ForceFieldTaskDocument"
    assert out["output"]["energy"] == pytest.approx(backend.predict(model, cu_test.subset([0])).frames[0].energy,
                                                    abs=1e-6)
    (doc,) = memory_store.query({"uuid": static.uuid, "index": 2}, properties=["name", "metadata"])
    assert doc["name"] == "pfd static check"
    assert doc["metadata"] == {"pfd_step": "validate", "pfd_model_sha256": model.sha256, "pfd_device": "cpu"}

    frames = md_frames(memory_store.get_output(md.uuid, load=True))
    assert len(frames) == 4 and frames.name == "md:nvt:T500"  # steps 5, 10, 15, 20; not the start
    assert not np.allclose(frames.frames[-1].positions, structure.cart_coords)
    assert not frames.frames[0].is_labelled  # the MD model's energies are no labels

    silver = Structure(structure.lattice, ["Ag"] * len(structure), structure.frac_coords)
    with pytest.raises(ValueError, match="Ag"):  # before any calculator is built
        run_with_model.original(ForceFieldStaticMaker(force_field_name="DeepMD"), backend, model, silver)


def test_dp_child_dies_with_a_killed_parent(tmp_path):
    """A worker or script killed by pid takes its ``dp`` child along instead of leaving it training."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    # a stand-in interpreter for the child only: it records its pid and sleeps where `dp train` would train
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'child.pid'}\nexec sleep 120\n")
    fake_python.chmod(0o755)
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pfd_atomate.train.deepmd import DeepMDBackend
        sys.executable = {str(fake_python)!r}
        DeepMDBackend(n_threads=1)._run_dp(["train", "input.json"], Path({str(tmp_path)!r}), "dp_train.log")
    """)])
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        assert parent.poll() is None, "the parent ended before starting its dp child"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(child, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{child}/stat") as stat:  # reaped by init soon; a zombie is dead already
                if stat.read().split(") ")[1].startswith("Z"):
                    return
        except FileNotFoundError:  # reaped between the two looks
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the dp child outlived its killed parent")
