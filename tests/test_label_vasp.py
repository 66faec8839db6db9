"""Label step through atomate2's VASP StaticMaker, with VASP replaced by real reference outputs.

The reference run (2-atom Si, VASP 5.4.1; see its README) lives next to the repository in
``../shared/testdata/vasp/Si_static`` and is read in place; atomate2's ``monkeypatch_vasp``
copies its outputs into the job directory instead of running VASP.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from pfd_atomate.data import Dataset, Frame
from pfd_atomate.label import LabelMaker, LabelOutput

VASP_TEST_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "vasp"
REF = VASP_TEST_DIR / "Si_static"

pytestmark = pytest.mark.skipif(not (REF / "outputs" / "vasprun.xml.gz").exists(), reason=f"{REF} not found")


@pytest.fixture
def mock_vasp(monkeypatch):
    from atomate2.utils.testing.vasp import monkeypatch_vasp

    yield from monkeypatch_vasp(monkeypatch, VASP_TEST_DIR)


def test_vasp_static_label_matches_vasprun(mock_vasp, tmp_path):
    import dpdata
    from pymatgen.core import Structure
    from pymatgen.io.vasp import Vasprun

    frame = Frame.from_structure(Structure.from_file(REF / "inputs" / "POSCAR"), source="poscar")
    flow = LabelMaker().make(Dataset(frames=[frame]))  # atomate2's VASP StaticMaker by default
    static_name = LabelMaker().static_maker.name  # the mock matches atomate2's own job name
    mock_vasp({static_name: "Si_static"}, {static_name: {"check_inputs": ["poscar", "potcar"]}})

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, root_dir=tmp_path, ensure_success=True)
    out = LabelOutput.model_validate(store.get_output(flow.output.uuid, load=True))
    assert (out.n_labelled, out.failed) == (1, [])
    labelled = out.dataset[0]

    vasprun = Vasprun(REF / "outputs" / "vasprun.xml.gz", parse_dos=False, parse_eigen=False)
    assert labelled.energy == pytest.approx(vasprun.final_energy, abs=1e-8)
    assert labelled.energy == pytest.approx(-10.84678256, abs=1e-6)  # TOTEN in the README
    np.testing.assert_allclose(labelled.forces, np.zeros((2, 3)), atol=1e-6)  # zero by symmetry
    np.testing.assert_allclose(labelled.cell, vasprun.final_structure.lattice.matrix, atol=1e-8)

    # virial sign/units cross-checked against dpdata's own OUTCAR reader (kBar * V -> eV)
    outcar = tmp_path / "OUTCAR"
    with gzip.open(REF / "outputs" / "OUTCAR.gz", "rb") as src, open(outcar, "wb") as dst:
        shutil.copyfileobj(src, dst)
    dp_virial = dpdata.LabeledSystem(str(outcar), fmt="vasp/outcar")["virials"][0]
    np.testing.assert_allclose(labelled.virial, dp_virial, atol=1e-6)
    # VASP reports -0.0477 kBar (slight tension): the cell wants to shrink, virial < 0
    assert np.trace(labelled.virial) < 0


def test_file_based_jobs_sharing_a_directory_are_not_trusted(mock_vasp, tmp_path, caplog):
    """Without create_folders, static jobs overwrite each other's files: the collector refuses."""
    from pymatgen.core import Structure

    frame = Frame.from_structure(Structure.from_file(REF / "inputs" / "POSCAR"))
    for create_folders, n_labelled in ((False, 0), (True, 2)):
        flow = LabelMaker(min_success_ratio=0.5, reuse_labels=False).make(Dataset(frames=[frame, frame]))
        names = [LabelMaker().static_maker.name]
        mock_vasp(dict.fromkeys(names, "Si_static"), dict.fromkeys(names, {"check_inputs": ["poscar", "potcar"]}))
        store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
        run_locally(flow, store=store, root_dir=tmp_path / str(create_folders), create_folders=create_folders)
        output = store.get_output(flow.output.uuid, load=True) if n_labelled else None
        assert (LabelOutput.model_validate(output).n_labelled if output else 0) == n_labelled
    assert "overwrote each other" in caplog.text


def test_vasp_labels_are_reused_from_the_store(mock_vasp, tmp_path):
    """A second labelling of the same frame in the same store runs no VASP and returns the stored label
    (the collector of a file-based code once failed when every frame was reused)."""
    from pymatgen.core import Structure

    frame = Frame.from_structure(Structure.from_file(REF / "inputs" / "POSCAR"), source="poscar")
    static_name = LabelMaker().static_maker.name
    mock_vasp({static_name: "Si_static"}, {static_name: {"check_inputs": ["poscar", "potcar"]}})
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    outputs = []
    for attempt in ("first", "second"):
        flow = LabelMaker().make(Dataset(frames=[frame]))
        run_locally(flow, store=store, root_dir=tmp_path / attempt, create_folders=True, ensure_success=True)
        outputs.append(LabelOutput.model_validate(store.get_output(flow.output.uuid, load=True)))
    assert [(o.n_labelled, o.n_reused) for o in outputs] == [(1, 0), (1, 1)]
    assert outputs[1].dataset[0].energy == outputs[0].dataset[0].energy
    assert outputs[1].dataset[0].source.startswith("poscar;reused:")
    assert not list((tmp_path / "second").rglob("vasprun.xml*"))  # VASP (the mock) did not run again
