"""The whole PFD flow through ``run_locally`` with a cheap real labeller (EMT via atomate2's
ForceFieldStaticMaker), CHGNet as the foundation model and a deepmd-kit se_e2_a student.

It checks that the loop iterates via ``Response(replace=...)``, converges, that every number in
the final document agrees with the stored job outputs, that MongoDB-style queries find the
iterations, and that model files come back out of the store and reproduce the recorded RMSEs.
"""

from __future__ import annotations

import pytest
from atomate2.forcefields.jobs import ForceFieldStaticMaker
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from pfd_atomate import queries
from pfd_atomate.data import ModelFile
from pfd_atomate.distill.flows import DistillMaker
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.evaluate.schemas import ConvergenceCriteria
from pfd_atomate.explore.frames import md_frames
from pfd_atomate.explore.schemas import Stage, TaskGroup
from pfd_atomate.finetune.jobs import FinetuneMaker
from pfd_atomate.flows import PFDMaker
from pfd_atomate.label.flows import LabelMaker
from pfd_atomate.perturb.jobs import PerturbMaker
from pfd_atomate.select.jobs import SelectMaker
from pfd_atomate.store import embedded_store, fetch_dataset, fetch_model
from pfd_atomate.train.chgnet import CHGNetBackend
from pfd_atomate.train.deepmd import DeepMDBackend

EMT = {"@module": "ase.calculators.emt", "@callable": "EMT"}
# loose enough for a few-epoch fine-tune on a handful of frames, tight enough that the
# pretrained CHGNet (no re-referencing, no training) would fail it on EMT labels
CRITERIA = ConvergenceCriteria(energy_rmse=0.02, force_rmse=0.25, accurate_ratio=None)


def cu_cell() -> Structure:
    fcc = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return fcc * (2, 1, 1)


def small_pfd_maker() -> PFDMaker:
    teacher = CHGNetBackend(epochs=4, batch_size=4, learning_rate=2e-3, seed=0, n_threads=2)
    student = DeepMDBackend(template="se_e2_a", numb_steps=400, rcut=4.5, rcut_smth=0.5, seed=0)
    group = TaskGroup(temperatures=[600.0], ensemble="nvt", n_steps=30, time_step=2.0, traj_interval=5)
    return PFDMaker(
        perturb=PerturbMaker(n_frames=4, cell_pert_fraction=0.02, atom_pert_distance=0.08, seed=3),
        label=LabelMaker(static_maker=ForceFieldStaticMaker(force_field_name=EMT), min_success_ratio=0.75),
        finetune=FinetuneMaker(
            trainer=teacher,
            stages=[Stage(task_groups=[group]), Stage(task_groups=[group.model_copy(update={"temperatures": [900.0]})])],
            select=SelectMaker(n_select=3, method="entropy"),
            criteria=CRITERIA,
            max_iterations=3,
            init_from="previous",
        ),
        distill=DistillMaker(
            student=student,
            task_groups=[TaskGroup(temperatures=[700.0], ensemble="nvt", n_steps=60, time_step=2.0, traj_interval=2)],
            perturb=PerturbMaker(n_frames=6, cell_pert_fraction=0.03, atom_pert_distance=0.15, seed=5),
            test_fraction=0.2,
        ),
    )


@pytest.fixture(scope="module")
def pfd_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pfd-run")
    maker = small_pfd_maker()
    flow = maker.make(cu_cell())
    store = embedded_store(run_dir)
    responses = run_locally(flow, store=store, root_dir=run_dir / "jobs", create_folders=True, ensure_success=True)
    store.connect()
    report = store.get_output(flow.jobs[-1].uuid, load=True)
    return maker, flow, store, responses, report


def test_loop_iterates_with_replace_and_converges(pfd_run):
    maker, flow, store, responses, report = pfd_run
    assert report["converged"], report["iterations"]
    iterations = report["iterations"]
    assert report["n_iterations"] == len(iterations) >= 2  # two stages -> at least two iterations
    assert [it["stage"] for it in iterations][-1] == 1
    for it in iterations:
        if it["converged"]:
            assert it["energy_rmse"] <= CRITERIA.energy_rmse and it["force_rmse"] <= CRITERIA.force_rmse
    # the loop job was replaced once per iteration: its uuid has outputs at several indices
    loop_uuid = flow.jobs[2].jobs[-1].uuid
    assert len(responses[loop_uuid]) >= 2
    assert any(r.replace is not None for r in responses[loop_uuid].values())


def test_label_accounting_matches_stored_jobs(pfd_run):
    _, flow, store, _, report = pfd_run
    label_docs = queries.label_jobs(store, flow.uuid)
    # initial labels + one labelling per iteration, every one stored as a LabelOutput (the teacher's
    # labels are LabelOutputs too, of the distill step)
    assert len({d["uuid"] for d in label_docs}) == 1 + report["n_iterations"]
    assert [d["output"]["n_labelled"] for d in label_docs] == (
        [report["n_initial_labels"]] + [it["n_labelled"] for it in report["iterations"]])
    assert report["n_dft_labels"] == report["n_initial_labels"] + sum(it["n_labelled"] for it in report["iterations"])
    assert report["n_initial_labels"] == 4 and report["n_label_failures"] == 0
    # the run's labels as one dataset, each frame once: the initial (perturbed) frames first
    labels = queries.dft_labels(store, flow.uuid)
    assert len(labels) == report["n_dft_labels"] and all(f.is_labelled for f in labels)
    assert len({f.fingerprint() for f in labels}) == len(labels)
    assert [f.source.split(":")[0] for f in labels][:4] == ["perturb"] * 4
    assert queries.dft_labels(store, "another-run").frames == []


def report_run(store) -> str:
    """The run uuid the report job carries in its metadata."""
    (doc,) = store.query({"metadata.pfd_step": "report"}, properties=["metadata"])
    return doc["metadata"]["pfd_run"]


def test_every_job_carries_the_run_and_its_step(pfd_run):
    """One identity per run: every stored job document (the dynamic ones too) names the run and its
    PFD step; the iteration jobs name their stage and iteration."""
    _, flow, store, _, report = pfd_run
    docs = list(store.query({}, properties=["name", "metadata"]))
    assert docs and all(d["metadata"].get("pfd_run") == flow.uuid for d in docs)
    steps = {d["metadata"].get("pfd_step") for d in docs}
    assert {"perturb", "label", "train", "explore", "select", "test", "decide", "distill", "report"} <= steps
    tests = sorted((d["metadata"]["stage"], d["metadata"]["iteration"]) for d in docs
                   if d["metadata"].get("pfd_step") == "test")
    assert tests == [(it["stage"], it["iteration"]) for it in report["iterations"]]
    # the static label jobs of an iteration inherit its stage and iteration
    statics = [d for d in docs if "pfd_label_keys" in d["metadata"] and "iteration" in d["metadata"]]
    assert len(statics) == sum(it["n_labelled"] - it["n_reused"] for it in report["iterations"])


def test_mongo_query_finds_accurate_iterations(pfd_run):
    _, _, store, _, report = pfd_run
    threshold = 0.25
    docs = list(store.query({"output.metrics.force_rmse": {"$lt": threshold}, "metadata.pfd_step": "test",
                             "metadata.pfd_run": report_run(store)}))
    expected = [it for it in report["iterations"] if it["force_rmse"] < threshold]
    assert len(docs) == len(expected)
    assert sorted(d["output"]["metrics"]["force_rmse"] for d in docs) == pytest.approx(
        sorted(it["force_rmse"] for it in expected)
    )


def test_models_come_back_from_the_store(pfd_run, tmp_path):
    maker, _, store, _, report = pfd_run
    lineage = {m["role"]: m for m in report["lineage"]}
    teacher = fetch_model(store, lineage["teacher"]["location"]["job_uuid"])
    student = fetch_model(store, lineage["student"]["location"]["job_uuid"])
    assert teacher.sha256 == lineage["teacher"]["sha256"] and teacher.backend == "chgnet"
    assert student.sha256 == lineage["student"]["sha256"] and student.backend == "deepmd"
    path = student.materialize(tmp_path)
    assert path.stat().st_size == student.size_bytes
    # the held-out DFT set reproduces the RMSEs recorded for the final iteration and the student
    where = report["datasets"]["held_out_dft"]
    held_out = fetch_dataset(store, where["job_uuid"], where["field"])
    assert held_out.is_labelled and len(held_out) == report["iterations"][-1]["n_labelled"]
    teacher_err = frame_errors(held_out, maker.finetune.trainer.predict(teacher, held_out))
    assert teacher_err.force_rmse == pytest.approx(report["iterations"][-1]["force_rmse"], rel=1e-4)
    student_err = frame_errors(held_out, maker.distill.student.predict(student, held_out))
    assert student_err.force_rmse == pytest.approx(report["student_dft_test"]["force_rmse"], rel=1e-4)


def test_student_learnt_from_teacher(pfd_run):
    _, _, _, _, report = pfd_run
    st = report["student_teacher_test"]
    assert st["n_frames"] >= 3
    # a student that learnt nothing would sit near the force scale of 700 K Cu frames (~0.5-1 eV/Å)
    assert st["force_rmse"] < 0.3
    assert report["n_distill_frames"] > 10


def test_teacher_labels_md_rattled_and_initial_frames(pfd_run):
    """The teacher labels its MD frames, the distillation's rattled frames and the perturbed initial
    frames: every candidate is counted. The distillation's jobs are found by their metadata."""
    _, flow, store, _, report = pfd_run
    store.connect()

    def output(step, field):  # found by the job's metadata (distill_step), as users query
        out = store.get_output(queries.distill_job(store, step, report_run), load=True)  # a LabelOutput is decoded
        return out[field] if isinstance(out, dict) else getattr(out, field)

    report_run = flow.uuid  # metadata.pfd_run of every job of the run
    # each MD task: a launcher job replaced by atomate2's ForceFieldMDMaker job under the same uuid, its metadata kept
    md_uuids = {d["uuid"] for d in store.query({"metadata.distill_step": "explore", "metadata.pfd_run": report_run},
                                               properties=["uuid"])}
    assert md_uuids == {d["uuid"] for d in store.query({"name": {"$regex": "^pfd distill explore"}}, properties=["uuid"])}
    md_docs = [store.get_output(uuid, load=True) for uuid in md_uuids]
    assert all(d["@class"] == "ForceFieldTaskDocument" for d in md_docs)
    n_md = sum(len(md_frames(d)) for d in md_docs)
    assert n_md == sum(len(d["objects"]["trajectory"]["coords"]) - 1 for d in md_docs)  # all but the start
    teacher_sha = {m["role"]: m for m in report["lineage"]}["teacher"]["sha256"]
    for uuid in md_uuids:  # the MD job says which model drove it, and where
        (last,) = store.query({"uuid": uuid}, properties=["metadata", "index"], sort={"index": -1}, limit=1)
        assert last["metadata"]["pfd_model_sha256"] == teacher_sha and last["metadata"]["pfd_device"] == "cpu"
    rattled = output("perturb", "dataset")["frames"]
    assert len(rattled) == 6
    n_candidates = output("select", "n_candidates")
    assert n_candidates == n_md + len(rattled) + report["n_initial_labels"]
    # the teacher labels through atomate2's ForceFieldStaticMaker, batches of frames per job, each
    # job run with the teacher model; every frame that passed the filters is labelled
    # each batch's output is one object in the data store
    statics = list(store.query({"metadata.pfd_step": "distill", "name": {"$regex": "Force field static"}},
                               properties=["uuid", "metadata", "output"], load=True))
    assert statics and all(d["output"]["error"] is None for d in statics)
    assert all(d["metadata"]["pfd_model_sha256"] == teacher_sha for d in statics)
    docs = [doc for d in statics for doc in d["output"]["task_document"]]
    assert {doc["@class"] for doc in docs} == {"ForceFieldTaskDocument"}
    n_labelled = output("teacher label", "n_labelled")
    assert len(docs) == n_labelled == output("select", "n_after_filter")
    split = output("split", "test_indices"), output("split", "train_indices")
    assert len(split[1]) == report["n_distill_frames"] and sorted(split[0] + split[1]) == list(range(n_labelled))
    with pytest.raises(ValueError, match="'teacher label'"):  # one job per MD task: no single uuid
        queries.distill_job(store, "explore", report_run)
    with pytest.raises(LookupError, match="found 0"):
        queries.distill_job(store, "split", "another-run")


def test_bad_input_fails_before_any_job(tmp_path):
    maker = small_pfd_maker()
    overlapping = Structure(Lattice.cubic(3.61), ["Cu", "Cu"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(ValueError, match="overlapping"):
        maker.make(overlapping)
    unknown = Structure(Lattice.cubic(5.0), ["Og"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="Og"):
        maker.make(unknown)
    maker.finetune.trainer = CHGNetBackend(base_model=str(tmp_path / "missing.pth.tar"))
    with pytest.raises(FileNotFoundError):
        maker.make(cu_cell())


def test_task_group_supercell_sets_its_own_md_cells(tmp_path):
    """A task group's own supercell wins over the Maker's ``md_supercell``, only for that group; the memory
    check sees the largest cell any group asks for; a wrong supercell names the field before any job."""
    structure = cu_cell()  # 8 atoms
    groups = [TaskGroup(temperatures=[300.0], n_steps=10),
              TaskGroup(temperatures=[300.0, 600.0], n_steps=10, supercell=(2, 2, 3))]
    distill = DistillMaker(teacher=CHGNetBackend(), task_groups=groups, md_supercell=(1, 1, 2), perturb=None)
    model = tmp_path / "teacher.pth.tar"
    model.write_bytes(b"weights")
    flow = distill.make(ModelFile.from_path(model, backend="chgnet"), structure)

    def atoms(job) -> int:
        (start,) = [a for a in [*job.function_args, *job.function_kwargs.values()] if isinstance(a, Structure)]
        return len(start)

    sizes = {job.name: atoms(job) for job in flow.jobs if job.name.startswith("pfd distill explore")}
    assert sizes == {"pfd distill explore g0 T300 #0": 16, "pfd distill explore g1 T300 #0": 96,
                     "pfd distill explore g1 T600 #0": 96}
    # the student's memory estimate (se_e2_a) at 8 x 512 atoms is about 4 GiB, at 16 atoms 1.2 GiB
    maker = small_pfd_maker()
    maker.distill = DistillMaker(task_groups=[groups[0], groups[1].model_copy(update={"supercell": (8, 8, 8)})],
                                 md_supercell=(1, 1, 2), perturb=None, student=maker.distill.student)
    maker.max_memory_gib = 3.0
    with pytest.raises(ValueError, match="student training of 4096-atom cells"):
        maker.make(structure)
    maker.distill.task_groups = groups
    assert maker.make(structure) is not None
    with pytest.raises(ValueError, match="supercell"):
        TaskGroup(temperatures=[300.0], supercell=(2, 0, 1))


def test_task_group_min_length_repeats_each_structure_to_a_width(tmp_path):
    """``min_length`` gives each starting structure its own repeats, by its perpendicular widths (a sheared cell is
    narrower than its lattice vectors are long); the memory check follows the same rule; both rules at once are refused."""
    from pfd_atomate.explore.schemas import repeats_for_width

    cubic = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    # a = b = 4 Å at 60°: the width across a is 4 sin 60° = 3.46 Å; c = 9 Å
    sheared = Structure(Lattice.from_parameters(4.0, 4.0, 9.0, 90, 90, 60), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert repeats_for_width(cubic.lattice, 7.0) == (2, 2, 2)
    assert repeats_for_width(cubic.lattice, 7.2) == (2, 2, 2)  # exactly two widths: no third repeat
    assert repeats_for_width(sheared.lattice, 7.0) == (3, 3, 1)  # 2 x 3.46 Å < 7 Å although 2 x 4 Å > 7 Å
    group = TaskGroup(temperatures=[300.0], n_steps=10, min_length=7.0)
    distill = DistillMaker(teacher=CHGNetBackend(), task_groups=[group], md_supercell=(1, 1, 1), perturb=None)
    model = tmp_path / "teacher.pth.tar"
    model.write_bytes(b"weights")
    flow = distill.make(ModelFile.from_path(model, backend="chgnet"), [cubic, sheared])

    def atoms(job) -> int:
        (start,) = [a for a in [*job.function_args, *job.function_kwargs.values()] if isinstance(a, Structure)]
        return len(start)

    sizes = sorted(atoms(j) for j in flow.jobs if j.name.startswith("pfd distill explore"))
    assert sizes == [18, 32]  # 2 x 3 x 3 x 1 and 4 x 2 x 2 x 2
    maker = small_pfd_maker()
    maker.distill = DistillMaker(task_groups=[group.model_copy(update={"min_length": 60.0})], perturb=None,
                                 student=maker.distill.student)  # 17^3 x 4 = 19652 atoms
    maker.max_memory_gib = 8.0
    with pytest.raises(ValueError, match="student training of 19652-atom cells"):
        maker.make(cubic)
    with pytest.raises(ValueError, match="supercell or min_length, not both"):
        TaskGroup(temperatures=[300.0], supercell=(2, 2, 2), min_length=7.0)


def test_default_teacher_md_cells_follow_the_students_cutoff(tmp_path):
    """The default distillation task groups make their large cells at least as wide as the student's own cutoff
    (a 7 Å student gets wider cells than the default 6 Å one), so that no atom sees its own periodic images;
    groups given by the user are kept as they are; the memory check counts the cells the MD will run."""
    from pfd_atomate.presets import se_e2_a_student

    # primitive fcc Cu: every perpendicular width is a / sqrt(3) = 2.08 Å
    primitive = Structure(Lattice.from_parameters(2.55, 2.55, 2.55, 60, 60, 60), ["Cu"], [[0, 0, 0]])
    model = tmp_path / "teacher.pth.tar"
    model.write_bytes(b"weights")

    def largest_md_cell(distill: DistillMaker) -> int:
        flow = distill.make(ModelFile.from_path(model, backend="chgnet"), primitive)
        return max(len(a) for j in flow.jobs if j.name.startswith("pfd distill explore")
                   for a in [*j.function_args, *j.function_kwargs.values()] if isinstance(a, Structure))

    default = DistillMaker(teacher=CHGNetBackend(), perturb=None)
    wider = DistillMaker(teacher=CHGNetBackend(), perturb=None, student=se_e2_a_student(rcut=7.0))
    assert default.task_groups is None and default.teacher_task_groups()[-1].min_length == 6.0
    assert wider.teacher_task_groups()[-1].min_length == 7.0
    assert largest_md_cell(default) == 27 and largest_md_cell(wider) == 64  # 3^3 (6.2 Å) and 4^3 (8.3 Å) repeats
    chgnet_student = DistillMaker(teacher=CHGNetBackend(), perturb=None, student=CHGNetBackend())
    assert chgnet_student.teacher_task_groups()[-1].min_length == 6.0  # a student that does not know its cutoff
    mine = [TaskGroup(temperatures=[300.0], n_steps=10, min_length=3.0)]
    assert DistillMaker(teacher=CHGNetBackend(), task_groups=mine, student=se_e2_a_student(rcut=7.0)
                        ).teacher_task_groups() == mine
    maker = small_pfd_maker()
    maker.distill = DistillMaker(perturb=None, student=se_e2_a_student(rcut=40.0))  # 20^3 = 8000 atoms
    maker.max_memory_gib = 2.0
    with pytest.raises(ValueError, match="student training of 8000-atom cells"):
        maker.make(primitive)
