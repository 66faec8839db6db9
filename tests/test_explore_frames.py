"""Frames of an exploration MD, read from atomate2's own ForceFieldMDMaker task document (EMT Cu, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from atomate2.forcefields.md import ForceFieldMDMaker
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from pfd_atomate.data import Dataset
from pfd_atomate.explore.frames import candidate_frames, md_frames
from pfd_atomate.select.jobs import SelectMaker

EMT = {"@module": "ase.calculators.emt", "@callable": "EMT"}


def _cu() -> Structure:
    return Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _md_doc(memory_store, folder, store_trajectory="partial"):
    md = ForceFieldMDMaker(force_field_name=EMT, n_steps=20, traj_interval=5, temperature=600, mb_velocity_seed=3,
                           store_trajectory=store_trajectory, tags=["md:nvt:T600"]).make(_cu())
    # in its own folder: atomate2's MD writes final_atoms_object.xyz where it runs
    run_locally(md, store=memory_store, root_dir=folder, create_folders=True, ensure_success=True, log=False)
    return memory_store.get_output(md.uuid, load=True)


def test_md_frames_are_the_trajectory_without_its_start(memory_store, tmp_path):
    doc = _md_doc(memory_store, tmp_path)
    frames = md_frames(doc)
    coords = np.asarray(doc["objects"]["trajectory"]["coords"])  # fractional, one array per stored step
    assert len(frames) == len(coords) - 1 == 4  # steps 5, 10, 15, 20
    assert frames.name == "md:nvt:T600" and {f.source for f in frames} == {"md:nvt:T600"}
    lattice = np.asarray(frames.frames[-1].cell)
    np.testing.assert_allclose(np.asarray(frames.frames[-1].positions) % 3.61, (coords[-1] @ lattice) % 3.61,
                               atol=1e-8)
    assert not np.allclose(frames.frames[0].positions, _cu().cart_coords)  # the atoms moved
    assert not any(f.is_labelled for f in frames)  # the MD model's energies are not labels

    # the selection reads task documents and datasets alike
    select = SelectMaker(n_select=3, method="random", seed=0)
    out = select.make.original(select, [doc, None, frames])
    assert out.n_candidates == 8 and out.n_selected == 3


def test_md_without_a_trajectory_is_refused_with_the_setting_to_change(memory_store, tmp_path):
    with pytest.raises(ValueError, match="store_trajectory='partial'"):
        md_frames(_md_doc(memory_store, tmp_path, store_trajectory="no"))


def test_candidate_frames_pass_datasets_through():
    assert candidate_frames(None) is None
    data = Dataset(frames=[], name="empty")
    assert candidate_frames(data) is data
