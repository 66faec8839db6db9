"""Nothing read from a store writes outside its folder or runs code; bad settings fail before any job;
tolerated label failures are success; a second run on the same store pays no initial label again.
"""

from __future__ import annotations

import os


import numpy as np
import pytest
from ase.build import bulk
from jobflow import run_locally
from pymatgen.core import Lattice, Molecule, Structure
from workflow_jobs import cu_cell, tiny_pfd_maker

from pfd_atomate import CHGNetBackend, DeepMDBackend, DistillMaker, FinetuneMaker, PFDMaker, SelectMaker
from pfd_atomate.data import Dataset, Frame, ModelFile, as_model_file


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _doc(filename: str, raw: bytes = b"weights") -> dict:
    import base64
    import hashlib

    return {"backend": "deepmd", "filename": filename, "sha256": hashlib.sha256(raw).hexdigest(),
            "size_bytes": len(raw), "content_b64": base64.b64encode(raw).decode()}


@pytest.mark.parametrize("filename", ["../../x.pth", "/tmp/evil.pth", "sub/model.pth", ".hidden", "a/../../b"])
def test_stored_model_with_a_path_for_a_name_is_refused_and_writes_nothing(filename, tmp_path, monkeypatch):
    monkeypatch.setenv("PFD_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="plain file name"):
        as_model_file(_doc(filename))
    assert not (tmp_path / "cache").exists() and not os.path.exists("/tmp/evil.pth")


def test_model_whose_bytes_do_not_match_its_sha256_is_refused(tmp_path):
    doc = _doc("model.pth") | {"sha256": "0" * 64}
    model = as_model_file(doc)
    with pytest.raises(ValueError, match="does not match its sha256"):
        model.materialize(tmp_path)
    assert not list(tmp_path.iterdir())


def test_chgnet_model_with_a_pickle_payload_is_refused_and_does_not_run(tmp_path, monkeypatch):
    import torch

    marker = tmp_path / "payload-ran"
    path = tmp_path / "chgnet_finetuned.pth.tar"
    torch.save({"model": {"model_args": {}, "state_dict": {}, "trap": Payload(marker)}}, path)
    assert b"system" in path.read_bytes()  # the payload is really in the file
    model = ModelFile.from_path(path, backend="chgnet", type_map=["Cu"])
    frames = Dataset(frames=[Frame.from_atoms(bulk("Cu", cubic=True), with_labels=False)])
    monkeypatch.setenv("PFD_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="refused"):
        CHGNetBackend(n_threads=1).predict(model, frames)
    with pytest.raises(ValueError, match="refused"):
        CHGNetBackend(base_model=str(path)).check_elements(["Cu"])
    assert not marker.exists()


def test_settings_file_is_plain_yaml(tmp_path, monkeypatch):
    from pfd_atomate.settings import PFDSettings

    marker = tmp_path / "settings-ran"
    config = tmp_path / "pfd.yaml"
    config.write_text(f'MODEL_CACHE: !!python/object/apply:os.system ["touch {marker}"]\n')
    monkeypatch.setenv("PFD_CONFIG_FILE", str(config))
    import yaml

    with pytest.raises(yaml.YAMLError):
        PFDSettings()
    config.write_text('RUN_DIR: {"@module": "os", "@callable": "system", "command": "touch x"}\n')
    with pytest.raises(ValueError):
        PFDSettings()  # a dict is not a path: nothing is built from @module/@callable
    config.write_text(f"RUN_DIR: {tmp_path / 'runs'}\n")
    assert PFDSettings().RUN_DIR == tmp_path / "runs"
    assert not marker.exists()


def _si() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


BAD_SETTINGS = [
    (lambda: SelectMaker(n_select=0), "SelectMaker.n_select", "0"),
    (lambda: DeepMDBackend(rcut=0.4, rcut_smth=0.5), "rcut_smth < rcut", "0.4"),
    (lambda: DeepMDBackend(numb_steps=0), "DeepMDBackend.numb_steps", "0"),
    (lambda: DeepMDBackend(energy_weight=0.0), "DeepMDBackend.energy_weight", "0.0"),
    (lambda: DeepMDBackend(energy_weight=True), "DeepMDBackend.energy_weight", "True"),
    (lambda: DeepMDBackend(template="se_zz"), "DeepMDBackend.template", "se_zz"),
    (lambda: DistillMaker(test_fraction=1.5), "DistillMaker.test_fraction", "1.5"),
    (lambda: FinetuneMaker(max_iterations=0), "FinetuneMaker.max_iterations", "0"),
    (lambda: FinetuneMaker(max_iterations=-1), "FinetuneMaker.max_iterations", "-1"),
    (lambda: FinetuneMaker(init_from="prev"), "FinetuneMaker.init_from", "prev"),
    (lambda: FinetuneMaker(on_not_converged="stop"), "FinetuneMaker.on_not_converged", "stop"),
    (lambda: Frame(species=["Si"], positions=[[0, 0, 0]], cell=np.eye(3).tolist(), forces=[[0, 0]]),
     "Frame.forces must have shape", "(1, 2)"),
    (lambda: Frame(species=["Si"], positions=[[0, 0, 0]], cell=np.eye(3).tolist(), forces=[[np.nan, 0, 0]]),
     "Frame.forces contains non-finite", ""),
]


@pytest.mark.parametrize(("build", "field", "value"), BAD_SETTINGS)
def test_bad_settings_fail_at_construction_naming_field_and_value(build, field, value):
    with pytest.raises(ValueError) as err:
        build()
    assert field in str(err.value) and value in str(err.value)


def test_bad_input_fails_at_make_before_any_job(tmp_path):
    # malformed bytes make torch's loaders raise many error types; every one must become the same clear refusal.
    # With torch 2.13 these seeds give UnpicklingError, IndexError, UnicodeDecodeError, KeyError, RuntimeError.
    for seed in (0, 17, 54, 62, 941):
        junk = np.random.default_rng(seed).bytes(2048)
        for name, backend, message in (("not-a-model.pth.tar", CHGNetBackend, "not a CHGNet checkpoint"),
                                       ("not-a-model.pt", DeepMDBackend, "not a deepmd-kit model file"),
                                       ("not-a-model.pth", DeepMDBackend, "not a deepmd-kit model file")):
            path = tmp_path / f"{seed}-{name}"
            path.write_bytes(junk)
            with pytest.raises(ValueError, match=message):
                PFDMaker(finetune=FinetuneMaker(trainer=backend(base_model=str(path)))).make(_si())
    for wrong in (Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), "POSCAR", 42):
        with pytest.raises(TypeError, match="pymatgen Structure"):
            PFDMaker().make(wrong)
    with pytest.raises(ValueError, match="singular lattice"):
        PFDMaker().make(Structure(Lattice([[1, 0, 0], [2, 0, 0], [0, 0, 1]]), ["Si"], [[0, 0, 0]]))
    # ASE Atoms are converted
    assert len(PFDMaker().make(bulk("Si", "diamond", a=5.43)).jobs) == 5
    # a cell too big for this machine's memory is refused with the estimate; a user can raise the limit
    big = cu_cell() * (8, 8, 4)  # 2048 atoms
    with pytest.raises(ValueError, match=r"2048-atom cells with CHGNetBackend needs about .* GiB"):
        PFDMaker(finetune=FinetuneMaker(trainer=CHGNetBackend()), max_memory_gib=16).make(big)
    assert PFDMaker(finetune=FinetuneMaker(trainer=CHGNetBackend()), distill=None,
                    max_memory_gib=1e4).make(big) is not None


def _failing_labeller_maker(ratio: float):
    """The tiny PFD labeller, but every other frame is Si-doped: EMT has no Si, so half fail for real."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    from pfd_atomate import LabelMaker

    return LabelMaker(static_maker=ForceFieldStaticMaker(force_field_name={"@module": "ase.calculators.emt",
                                                                           "@callable": "EMT"}),
                      min_success_ratio=ratio)


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_half_failing_labels_succeed_at_half_and_fail_at_three_quarters(ratio, tmp_path, caplog):
    from pfd_atomate.store import embedded_store

    frames = []
    for i in range(4):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=i)
        if i % 2:
            atoms.symbols[0] = "Si"
        frames.append(Frame.from_atoms(atoms, with_labels=False, source=f"f{i}"))
    flow = _failing_labeller_maker(ratio).make(Dataset(frames=frames))
    store = embedded_store(tmp_path)
    if ratio == 0.5:
        run_locally(flow, store=store, root_dir=tmp_path / "jobs", create_folders=True, ensure_success=True, log=False)
        store.connect()
        out = store.get_output(flow.uuid, load=True)
        assert (out.n_labelled, len(out.failed)) == (2, 2)
        assert all("No EMT-potential for Si" in f.reason for f in out.failed)
    else:
        with pytest.raises(RuntimeError, match="did not finish running successfully"):
            run_locally(flow, store=store, root_dir=tmp_path / "jobs", create_folders=True, ensure_success=True,
                        log=True)
        assert "only 2/4 frames labelled" in caplog.text
        assert caplog.text.count("NotImplementedError: No EMT-potential for Si") >= 2  # each frame's real cause


def test_a_second_run_on_the_same_store_reuses_every_initial_label(tmp_path):
    from pfd_atomate import queries
    from pfd_atomate.store import embedded_store

    store = embedded_store(tmp_path)
    reports = []
    for k in range(2):
        flow = tiny_pfd_maker(distill=False).make(cu_cell())
        run_locally(flow, store=store, root_dir=tmp_path / f"jobs{k}", create_folders=True, ensure_success=True,
                    log=False)
        reports.append(queries.run_report(store, flow.uuid))
    first, second = reports
    assert first["n_reused_labels"] == 0 and first["n_paid_labels"] == first["n_dft_labels"]
    assert second["n_initial_labels"] == first["n_initial_labels"] == 3
    assert second["n_reused_labels"] >= 3  # every initial label (same perturbed frames, same labeller)
    assert second["n_paid_labels"] == second["n_dft_labels"] - second["n_reused_labels"]
    # the two runs stay apart: each query answers for its own run only
    assert len(queries.iteration_tests(store, flow.uuid)) == second["n_iterations"]

