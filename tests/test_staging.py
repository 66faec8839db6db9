"""Inputs given by value are stored once and referenced, not copied into every job."""

import hashlib
import json
import os

import pytest
from ase.build import bulk
from jobflow import Flow, job, run_locally
from monty.json import jsanitize
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from pfd_atomate import DistillMaker, ModelFile
from pfd_atomate.data import as_model_file
from pfd_atomate.data.staging import staged
from pfd_atomate.explore.schemas import TaskGroup
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.validation.jobs import CalculatorSpec, EOSValidationMaker


def cu_cell() -> Structure:
    return Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def model_file(tmp_path) -> ModelFile:
    path = tmp_path / "teacher.pth.tar"
    path.write_bytes(os.urandom(300_000))  # random bytes: their base64 occurs nowhere by chance
    return ModelFile.from_path(path, backend="chgnet")


def jobs_carrying(flow: Flow, model: ModelFile) -> list[str]:
    """Names of the jobs whose serialized inputs hold the model's bytes."""
    marker = model.content_b64[1000:1100]
    return [j.name for j in flow.jobs
            if marker in json.dumps(jsanitize(j.as_dict(), strict=True, allow_bson=True, enum_values=True))]


@job
def model_digest(model) -> str:
    """SHA-256 of the bytes a job receives for ``model``."""
    return hashlib.sha256(as_model_file(model).to_bytes()).hexdigest()


def test_teacher_given_by_value_is_stored_once(tmp_path, memory_store):
    """Ten MD jobs and the label job of a distillation reference one stored teacher; its bytes reach a job intact
    and sit in the ``data`` store, not in the output documents."""
    teacher = model_file(tmp_path)
    groups = [TaskGroup(temperatures=[300.0, 600.0, 900.0], n_steps=10), TaskGroup(temperatures=[300.0], n_steps=10)]
    flow = DistillMaker(teacher=CHGNetBackend(), task_groups=groups, perturb=None).make(teacher, [cu_cell()] * 2)
    assert jobs_carrying(flow, teacher) == ["pfd distill teacher model"]
    (stage,) = [j for j in flow.jobs if j.name == "pfd distill teacher model"]
    users = [j for j in flow.jobs if j.name.startswith(("pfd distill explore", "pfd distill teacher label"))]
    assert len(users) == 9 and all(stage.uuid in j.input_uuids for j in users)
    # the frames to select are the eight MD jobs' outputs, not the stored teacher (a ModelFile is no frame set)
    (select,) = [j for j in flow.jobs if j.name == "pfd distill select"]
    md_jobs = {j.uuid for j in flow.jobs if j.name.startswith("pfd distill explore")}
    assert set(select.input_uuids) == md_jobs and len(md_jobs) == 8
    # every job says which part of the distillation it is (what queries.distill_job selects on)
    steps = {j.uuid: j.metadata["distill_step"] for j in flow.jobs}
    assert {u for u, s in steps.items() if s == "explore"} == md_jobs and steps[stage.uuid] == "teacher model"
    assert sorted(steps.values()).count("teacher label") == 1 and set(steps.values()) == {
        "teacher model", "explore", "select", "teacher label", "split", "train student", "test vs teacher",
        "check compression", "gather"}  # no perturb, no DFT test set here

    # the stored model through a JobStore: same bytes out, one copy in the data store
    stage_job, ref = staged(teacher, "stage")
    digest = model_digest(ref)
    run_locally(Flow([*stage_job, digest]), store=memory_store, ensure_success=True, root_dir=tmp_path)
    assert memory_store.get_output(digest.uuid) == teacher.sha256
    memory_store.connect()
    doc = memory_store.docs_store.query_one({"uuid": stage_job[0].uuid})
    assert teacher.content_b64[:100] not in json.dumps(doc, default=str)
    assert memory_store.additional_stores["data"].count() == 1


def test_eos_validation_stores_a_model_given_by_value_once(tmp_path):
    """Three phases' EOS flows of one model given by value reference one stored copy."""
    model = model_file(tmp_path)
    spec = CalculatorSpec.from_model(model, CHGNetBackend(), name="fine-tuned")
    phases = {p: AseAtomsAdaptor.get_structure(bulk("Cu", p, a=3.6 if p == "fcc" else 2.9))
              for p in ("fcc", "bcc", "sc")}
    flow = EOSValidationMaker().make(phases, spec, CalculatorSpec.from_ase("ase.calculators.emt.EMT"))
    assert jobs_carrying(flow, model) == ["pfd validate eos model"]


def test_staged_passes_references_and_refuses_other_values(tmp_path):
    """An OutputReference or None needs no stage job; anything but a model file or dataset is refused by name."""
    stage, ref = staged(model_file(tmp_path), "first")
    assert staged(ref, "again") == ([], ref) and staged(None, "none") == ([], None)
    with pytest.raises(TypeError, match="pfd initial dataset: expected a ModelFile, a Dataset"):
        staged(cu_cell(), "pfd initial dataset")
