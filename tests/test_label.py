"""Label step through atomate2's ForceFieldStaticMaker with ASE's EMT as a cheap labeller."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from jobflow import Flow, Job, JobStore, OnMissing, job, run_locally
from maggma.stores import MemoryStore

from pfd_atomate.data import Dataset, Frame, as_dataset
from pfd_atomate.data.frames import stress_to_virial
from pfd_atomate.label import LabelMaker, LabelOutput

EMT_SPEC = {"@module": "ase.calculators.emt", "@callable": "EMT"}


def emt_maker():
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    return ForceFieldStaticMaker(force_field_name=EMT_SPEC)


def cu_frames(n: int = 4, seed: int = 0) -> Dataset:
    """Rattled fcc Cu cells under different strains (tension, compression, shear)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(Frame.from_atoms(atoms, source=f"test:{i}", with_labels=False))
    return Dataset(frames=frames, name="cu")


def si_impurity_frame() -> Frame:
    """A Cu3Si cell: EMT has no Si parameters, so labelling it really fails."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    symbols = atoms.get_chemical_symbols()
    symbols[0] = "Si"
    atoms.set_chemical_symbols(symbols)
    return Frame.from_atoms(atoms, source="test:bad", with_labels=False)


def new_store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def run(flow, store, tmp_path):
    return run_locally(flow, store=store, root_dir=tmp_path, ensure_success=False, log=True)


def label_output(store: JobStore, uuid: str) -> LabelOutput:
    return LabelOutput.model_validate(store.get_output(uuid, load=True))


def assert_matches_emt(labelled: Frame, reference: Frame) -> None:
    atoms = reference.to_atoms(with_labels=False)
    atoms.calc = EMT()
    assert labelled.species == reference.species
    np.testing.assert_allclose(labelled.cell, reference.cell, atol=1e-8)
    # the task document's structure may wrap atoms into the cell: compare modulo lattice vectors
    shift = np.linalg.solve(np.asarray(reference.cell).T, (np.subtract(labelled.positions, reference.positions)).T)
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-8)
    assert labelled.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(labelled.forces, atoms.get_forces(), atol=1e-6)
    expected_virial = stress_to_virial(atoms.get_stress(), atoms.get_volume())
    np.testing.assert_allclose(labelled.virial, expected_virial, atol=1e-6)


def test_labels_equal_ase_emt_including_virial_sign(tmp_path):
    frames = cu_frames(4)
    flow = LabelMaker(static_maker=emt_maker()).make(frames)
    assert isinstance(flow, Job)  # fans out at run time, after looking for labels to reuse
    store = new_store()
    responses = run(flow, store, tmp_path)
    assert len(responses) == 1 + 4 + 1  # fan-out, 4 static jobs, collector

    out = label_output(store, flow.output.uuid)
    assert (out.n_requested, out.n_labelled, out.n_reused, out.failed) == (4, 4, 0, [])
    assert out.indices == [0, 1, 2, 3]
    assert "EMT" in out.labeller
    assert out.dataset.name == "cu:labelled"
    for labelled, reference in zip(out.dataset, frames):
        assert_matches_emt(labelled, reference)
        assert labelled.source.startswith(reference.source + ";label:")
    # the strains are large enough that the virial is not ~0: the sign check has teeth
    assert max(np.abs(f.virial).max() for f in out.dataset) > 0.1
    # the labelled dataset is kept in the data store, not inline in the job document
    assert store.additional_stores["data"].count() > 0


def test_stretched_cell_has_negative_virial_trace(tmp_path):
    """Tension pulls the cell back: ASE stress > 0, virial = -stress * V < 0 (and the reverse)."""
    frames = []
    for scale in (1.04, 0.96):
        atoms = bulk("Cu", "fcc", a=3.61 * scale, cubic=True)
        frames.append(Frame.from_atoms(atoms, with_labels=False))
    flow = LabelMaker(static_maker=emt_maker()).make(Dataset(frames=frames))
    store = new_store()
    run(flow, store, tmp_path)
    stretched, compressed = label_output(store, flow.output.uuid).dataset
    assert np.trace(stretched.virial) < -0.1
    assert np.trace(compressed.virial) > 0.1


@job
def make_frames(n: int) -> Dataset:
    return cu_frames(n, seed=1)


@job
def count_labelled(dataset: Dataset) -> int:
    return sum(frame.is_labelled for frame in as_dataset(dataset))


def test_dynamic_fan_out_from_upstream_reference(tmp_path):
    upstream = make_frames(3)
    label = LabelMaker(static_maker=emt_maker(), batch_size=2).make(upstream.output)
    assert label.name == "pfd label"
    downstream = count_labelled(label.output.dataset)  # what a training job would consume
    store = new_store()
    responses = run(Flow([upstream, label, downstream]), store, tmp_path)
    assert responses[downstream.uuid][1].output == 3
    # 2 batch jobs (2 + 1 frames) and the collector replaced the fan-out job
    n_static = sum("Force field static" in store.query_one({"uuid": u})["name"] for u in responses)
    assert n_static == 2

    out = label_output(store, label.uuid)  # the fan-out job's uuid holds the final output
    assert out.n_labelled == 3
    for labelled, reference in zip(out.dataset, cu_frames(3, seed=1)):
        assert_matches_emt(labelled, reference)


def test_failed_label_is_dropped_and_recorded(tmp_path, caplog):
    frames = cu_frames(3)
    frames.frames.insert(1, si_impurity_frame())
    flow = LabelMaker(static_maker=emt_maker(), min_success_ratio=0.75).make(frames)
    store = new_store()
    with caplog.at_level(logging.INFO):
        responses = run(flow, store, tmp_path)
    assert "No EMT-potential for Si" in caplog.text  # the static job failed for real
    # a tolerated failure is not a failed job: every job of the labelling ran to its end
    assert all(r[1].output is not None or r[1].replace is not None for r in responses.values())

    out = label_output(store, flow.output.uuid)
    assert (out.n_requested, out.n_labelled) == (4, 3)
    assert out.indices == [0, 2, 3]
    assert len(out.failed) == 1
    assert out.failed[0].index == 1
    bad_job = store.query_one({"uuid": out.failed[0].job_uuid}, properties=["name"])
    assert bad_job["name"].endswith(" 1")  # the static job of frame 1
    # the reason is the static job's own exception, not a generic "no output"
    assert "NotImplementedError" in out.failed[0].reason and "No EMT-potential for Si" in out.failed[0].reason
    for labelled, reference in zip(out.dataset, [frames[i] for i in out.indices]):
        assert_matches_emt(labelled, reference)


def test_collector_fails_below_min_success_ratio(tmp_path, caplog):
    frames = cu_frames(3)
    frames.frames.append(si_impurity_frame())
    flow = LabelMaker(static_maker=emt_maker(), min_success_ratio=0.9, reuse_labels=False).make(frames)
    collect = flow.jobs[-1]
    store = new_store()
    with caplog.at_level(logging.INFO):
        responses = run(flow, store, tmp_path)
    assert collect.uuid not in responses
    assert store.query_one({"uuid": collect.uuid}) is None
    assert "3/4 frames labelled" in caplog.text and "min_success_ratio" in caplog.text
    # the error names each dropped frame's real cause
    assert "frame 3: NotImplementedError" in caplog.text


def test_empty_input_is_rejected_before_fan_out(tmp_path, caplog):
    maker = LabelMaker(static_maker=emt_maker())
    with pytest.raises(ValueError, match="nothing to label"):
        maker.make(Dataset())

    upstream = make_frames(0)
    label = maker.make(upstream.output)
    store = new_store()
    with caplog.at_level(logging.INFO):
        responses = run(Flow([upstream, label]), store, tmp_path)
    assert set(responses) == {upstream.uuid}  # the fan-out failed and created no static job
    assert "nothing to label" in caplog.text


def test_maker_options_are_validated():
    from atomate2.vasp.jobs.core import StaticMaker
    from jobflow import Maker

    with pytest.raises(ValueError, match="min_success_ratio"):
        LabelMaker(static_maker=emt_maker(), min_success_ratio=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        LabelMaker(static_maker=emt_maker(), batch_size=0)
    with pytest.raises(ValueError, match="one structure per job"):
        LabelMaker(static_maker=StaticMaker(), batch_size=4)
    with pytest.raises(ValueError, match="no label adapter"):
        LabelMaker(static_maker=Maker())
    assert LabelMaker().static_maker.__class__ is StaticMaker  # VASP by default


def test_label_maker_round_trips_through_json():
    maker = LabelMaker(static_maker=emt_maker(), min_success_ratio=0.8, batch_size=3)
    restored = LabelMaker.from_dict(maker.as_dict())
    assert restored.min_success_ratio == 0.8 and restored.batch_size == 3
    assert restored.static_maker.ase_calculator_name == "EMT"
    flow = LabelMaker.from_dict({**maker.as_dict(), "reuse_labels": False}).make(cu_frames(2))
    collect = Flow.from_dict(flow.as_dict()).jobs[-1]
    assert OnMissing(collect.config.on_missing_references) is OnMissing.NONE


def test_labels_are_reused_from_the_store_not_paid_again(tmp_path):
    """The same frames by the same labeller settings: every label comes from the store, no static
    job runs; other settings, or ``reuse_labels=False``, label again."""
    frames = cu_frames(3, seed=4)
    store = new_store()
    first = LabelMaker(static_maker=emt_maker()).make(frames)
    run(first, store, tmp_path / "first")
    first_out = label_output(store, first.uuid)
    assert first_out.n_reused == 0
    # each static job's document names the labels it holds (jobflow metadata, queryable)
    keyed = list(store.query({"metadata.pfd_label_keys": {"$exists": True}}, properties=["metadata"]))
    assert len(keyed) == 3 and all(len(d["metadata"]["pfd_label_keys"]) == 1 for d in keyed)

    # a second labelling of two of them and one new frame, renamed: two reused, one paid
    again = Dataset(frames=[frames[2], cu_frames(1, seed=9)[0], frames[0]], name="again")
    second = LabelMaker(static_maker=emt_maker(), name="another name").make(again)
    responses = run(second, store, tmp_path / "second")
    out = label_output(store, second.uuid)
    assert (out.n_labelled, out.n_reused, out.n_paid) == (3, 2, 1)
    assert len(responses) == 1 + 1 + 1  # fan-out, one static job, collector
    for got, expected in ((out.dataset[0], first_out.dataset[2]), (out.dataset[2], first_out.dataset[0])):
        assert ";reused:" in got.source
        assert (got.energy, got.forces, got.virial, got.positions) == (
            expected.energy, expected.forces, expected.virial, expected.positions)
    for labelled, reference in zip(out.dataset, again):
        assert_matches_emt(labelled, reference)

    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    other = ForceFieldStaticMaker(force_field_name=EMT_SPEC, calculator_kwargs={"asap_cutoff": True})
    third = LabelMaker(static_maker=other).make(frames)
    run(third, store, tmp_path / "third")
    assert label_output(store, third.uuid).n_reused == 0
    fourth = LabelMaker(static_maker=emt_maker(), reuse_labels=False).make(frames)
    run(fourth, store, tmp_path / "fourth")
    assert label_output(store, fourth.output.uuid).n_reused == 0


def test_adapter_rejects_unusable_documents():
    from pfd_atomate.label.adapters import LabelError, labels_from_fields

    structure = cu_frames(1)[0].to_structure()
    good = {
        "structure": structure.as_dict(),  # plain JSON, as the collector reads it
        "energy": -1.5,
        "forces": np.zeros((4, 3)).tolist(),
        "stress": None,
        "state": "successful",
        "dir_name": "/somewhere",
    }
    labelled, energy, forces, virial = labels_from_fields(good, "ase")
    assert labelled == structure and energy == -1.5 and forces.shape == (4, 3) and virial is None
    bad_cases = {
        "not finite": {"energy": float("nan")},
        "shape": {"forces": np.zeros((3, 3)).tolist()},
        "failed": {"state": "failed"},
        "forces missing": {"forces": None},
        "3x3": {"stress": [[1.0, 0.0], [0.0, 1.0]]},
    }
    for match, change in bad_cases.items():
        with pytest.raises(LabelError, match=match):
            labels_from_fields({**good, **change}, "ase")
    with pytest.raises(LabelError, match="no output"):
        labels_from_fields(dict.fromkeys(good), "ase")
