"""The ``pfd`` command end to end on a tiny EMT configuration (run -> status -> report -> models),
the configuration file against the Python API, bad configurations, and ``PFDMaker()`` defaults.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from pfd_atomate.cli.main import app

runner = CliRunner()

TINY = """
structures: [cu8.cif]
run_dir: run
workers: 1
perturb: {n_frames: 3, cell_pert_fraction: 0.02, atom_pert_distance: 0.08, seed: 3}
label:
  labeller: {kind: forcefield, force_field_name: {"@module": "ase.calculators.emt", "@callable": "EMT"}}
  min_success_ratio: 0.5
finetune:
  trainer: {backend: chgnet, epochs: 1, batch_size: 4, learning_rate: 0.002, n_threads: 1}
  stages:
    - task_groups: [{temperatures: [600], ensemble: nvt, n_steps: 20, time_step: 2.0, traj_interval: 4}]
  select: {n_select: 2, method: random, seed: 0}
  criteria: {energy_rmse: 0.02, force_rmse: 0.25, accurate_ratio: null}
  max_iterations: 1
distill:
  student: {template: se_e2_a, numb_steps: 30, rcut: 4.5, rcut_smth: 0.5, seed: 0, n_threads: 1}
  task_groups: [{temperatures: [700], ensemble: nvt, n_steps: 20, time_step: 2.0, traj_interval: 2}]
  test_fraction: 0.3
"""


def _write_cell(folder):
    from workflow_jobs import cu_cell

    cu_cell().to(filename=str(folder / "cu8.cif"))


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    _write_cell(folder)
    (folder / "pfd.yaml").write_text(TINY)
    code, output = invoke("run", str(folder / "pfd.yaml"))
    return folder, code, output


def test_run_finishes_and_prints_the_iteration_table(cli_run):
    folder, code, output = cli_run
    assert code == 0, output
    assert "finished" in output and "fine-tune iterations" in output
    assert re.search(r"DFT labels: 5 in 2 labellings \(5 paid, 0 reused\)", output), output
    assert (folder / "run" / "run.json").is_file()


def test_status_of_a_finished_run(cli_run):
    folder, _, _ = cli_run
    code, output = invoke("status", str(folder / "run"))
    assert code == 0, output
    assert "DFT labels: 5" in output and "nothing running" in output
    assert "finished: 1 iterations" in output


def test_report_writes_json_and_plots_that_match_the_store(cli_run):
    folder, _, _ = cli_run
    code, output = invoke("report", str(folder / "run"))
    assert code == 0, output
    out = folder / "run" / "report"
    summary = json.loads((out / "report.json").read_text())
    for name in ("parity.png", "iterations.png", "labels.png"):
        assert (out / name).stat().st_size > 1000
    assert summary["dft_labels"] == summary["report"]["n_dft_labels"] == 5
    held = summary["held_out"]
    assert held["frames"] == summary["report"]["iterations"][-1]["n_labelled"]
    # the teacher on the held-out set is exactly the run's own test of its final model
    assert held["teacher"]["force_rmse_ev_per_a"] == pytest.approx(summary["report"]["iterations"][-1]["force_rmse"],
                                                                   rel=1e-6)
    assert f"{1000 * held['teacher']['force_rmse_ev_per_a']:.1f} meV/Å" in output


def test_models_come_out_sha_checked(cli_run, tmp_path):
    folder, _, _ = cli_run
    code, output = invoke("models", str(folder / "run"), "--role", "student", "-o", str(tmp_path))
    assert code == 0, output
    report = json.loads((folder / "run" / "report" / "report.json").read_text())["report"] if (
        folder / "run" / "report" / "report.json").is_file() else None
    (path,) = list(tmp_path.iterdir())
    from pfd_atomate.data.models import sha256_of_file

    sha = sha256_of_file(path)
    assert sha in output
    if report is not None:
        assert sha == next(m["sha256"] for m in report["lineage"] if m["role"] == "student")
    code, output = invoke("models", str(folder / "run"), "--role", "teacher", "-o", str(tmp_path))
    assert code == 0 and "chgnet" in output


def test_running_the_same_config_again_resumes_and_pays_nothing(cli_run):
    folder, _, _ = cli_run
    code, output = invoke("run", str(folder / "pfd.yaml"))
    assert code == 0, output
    assert "resumed" in output and "DFT labels: 5 in 2 labellings (5 paid, 0 reused)" in output


def test_config_maps_onto_the_same_flow_as_the_python_api(tmp_path):
    """The YAML file and the Makers built by hand give the same flow graph (uuids aside)."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker
    from workflow_jobs import cu_cell

    from pfd_atomate import (
        CHGNetBackend,
        ConvergenceCriteria,
        DistillMaker,
        FinetuneMaker,
        LabelMaker,
        PerturbMaker,
        PFDMaker,
        SelectMaker,
        Stage,
        TaskGroup,
    )
    from pfd_atomate.config import load_config
    from pfd_atomate.presets import se_e2_a_student
    from pfd_atomate.workflows.local import flow_digest

    _write_cell(tmp_path)
    config = load_config(yaml.safe_load(TINY))
    structures = config.load_structures(tmp_path)
    from_file = config.build().make(structures)
    by_hand = PFDMaker(
        perturb=PerturbMaker(n_frames=3, cell_pert_fraction=0.02, atom_pert_distance=0.08, seed=3),
        label=LabelMaker(static_maker=ForceFieldStaticMaker(
            force_field_name={"@module": "ase.calculators.emt", "@callable": "EMT"}), min_success_ratio=0.5),
        finetune=FinetuneMaker(
            trainer=CHGNetBackend(epochs=1, batch_size=4, learning_rate=0.002, n_threads=1),
            stages=[Stage(task_groups=[TaskGroup(temperatures=[600], ensemble="nvt", n_steps=20, time_step=2.0,
                                                 traj_interval=4)])],
            select=SelectMaker(n_select=2, method="random", seed=0),
            criteria=ConvergenceCriteria(energy_rmse=0.02, force_rmse=0.25, accurate_ratio=None),
            max_iterations=1,
        ),
        distill=DistillMaker(
            # a student key the file leaves out takes the default student's value (e.g. its final learning rate)
            student=se_e2_a_student(numb_steps=30, rcut=4.5, rcut_smth=0.5, seed=0, n_threads=1),
            task_groups=[TaskGroup(temperatures=[700], ensemble="nvt", n_steps=20, time_step=2.0, traj_interval=2)],
            test_fraction=0.3,
        ),
    ).make(structures)
    assert flow_digest(from_file) == flow_digest(by_hand)
    # and the defaults of the file are the defaults of the Makers
    assert flow_digest(load_config({"structures": ["cu8.cif"]}).build().make(cu_cell())) == flow_digest(
        PFDMaker().make(cu_cell()))


def test_student_input_overrides_add_to_the_default_nets():
    """``input_overrides`` of a student, in a file or in Python, are merged into the default student's network
    sizes; a file that sets the nets gets its own."""
    from pfd_atomate.config import load_config
    from pfd_atomate.presets import STUDENT_NETS, se_e2_a_student

    loss = {"loss": {"limit_pref_f": 3.0}}
    for student in (se_e2_a_student(input_overrides=loss),
                    load_config({"structures": ["cu8.cif"], "distill": {"student": {"input_overrides": loss}}})
                    .build().distill.student):
        assert student.input_overrides == STUDENT_NETS | loss
    small = {"model": {"fitting_net": {"neuron": [8, 8]}}}
    student = load_config({"structures": ["cu8.cif"], "distill": {"student": {"input_overrides": small}}}).build()
    assert student.distill.student.input_overrides["model"] == {"descriptor": STUDENT_NETS["model"]["descriptor"],
                                                                "fitting_net": {"neuron": [8, 8]}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"finetune": {"selct": {"n_select": 2}}}, r"finetune\.selct: unknown key; allowed keys: .*select"),
        ({"perturb": {"n_frames": "many"}}, r"perturb\.n_frames: Input should be a valid integer"),
        ({"finetune": {"select": {"n_select": 0}}}, r"finetune\.select: SelectMaker\.n_select must be an integer >= 1"),
        ({"finetune": {"trainer": {"backend": "deepmd", "rcut": 0.3, "rcut_smth": 0.5}}},
         r"finetune\.trainer: DeepMDBackend needs 0 <= rcut_smth < rcut"),
        ({"distill": {"test_fraction": 1.5}}, r"distill: DistillMaker\.test_fraction must be .* < 1\.0, got 1\.5"),
        ({"finetune": {"select": {"method": "best"}}}, r"finetune\.select\.method: Input should be 'entropy' or 'random'"),
        ({"label": {"labeller": {"kind": "gaussian"}}}, r"label\.labeller: .*'vasp', 'cp2k', 'forcefield'"),
    ],
)
def test_bad_configs_fail_with_the_key_path(tmp_path, change, expected):
    _write_cell(tmp_path)
    data = yaml.safe_load(TINY)
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    code, output = invoke("run", str(tmp_path / "bad.yaml"))
    assert code == 2
    assert re.search(expected, " ".join(output.split())), output
    assert not (tmp_path / "run").exists()  # nothing ran


def test_config_schema_and_example(tmp_path):
    code, output = invoke("config", "schema")
    schema = json.loads(output)
    assert code == 0 and schema["additionalProperties"] is False and "finetune" in schema["properties"]
    code, output = invoke("config", "example")
    assert code == 0 and "# frames to label per iteration." in output
    from pfd_atomate.config import load_config

    assert load_config(yaml.safe_load(output)).structures[0].name == "POSCAR"  # the example is a valid config


def test_default_pfd_maker_builds_the_full_flow_with_vasp_labels():
    """``PFDMaker().make(structure)``: perturb, VASP labels, the DPA-4 fine-tune loop, distillation into a
    compressed se_e2_a student, the report - checked without running VASP."""
    from atomate2.vasp.jobs.core import StaticMaker
    from pymatgen.core import Lattice, Structure

    import pfd_atomate
    from pfd_atomate import PFDMaker

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    maker = PFDMaker()
    flow = maker.make(si)
    names = [j.name for j in flow.jobs]
    assert names == ["pfd perturb", "pfd label initial", "pfd fine-tune", "pfd distill", "pfd report"]
    label = flow.jobs[1]
    assert isinstance(label.function_args[1], StaticMaker)  # atomate2's VASP StaticMaker
    # every frame of the input structure is labelled on its mesh: reciprocal_density 64, Γ-centred 4x4x4
    assert [(r.mesh, r.style) for r in label.function_args[6]] == [((4, 4, 4), "Gamma")]
    assert maker.finetune.trainer.base_model == "dpa4-neo"
    from pfd_atomate.train.foundation import lookup

    foundation = flow.jobs[-1].function_kwargs["foundation"]  # the report records the checkpoint's identity
    assert foundation.base_model == "dpa4-neo" and foundation.sha256 == lookup("dpa4-neo").sha256
    assert [s.name for s in maker.finetune.stages] == ["nvt", "npt"]
    assert maker.finetune.select.method == "entropy"
    assert maker.distill.student.template == "se_e2_a" and maker.distill.student.compress is not False
    distill_names = {j.name for j in flow.jobs[3].jobs}
    assert {"pfd distill teacher label", "pfd distill train student", "pfd distill check compression",
            "pfd distill perturb"} <= distill_names
    # the teacher's MD runs in cells wider than the student's cutoff too (64 atoms here): a student taught only
    # 8-atom cells, whose atoms see their own images, had 8x its teacher's force RMSE in 64-atom cells
    md_cells = {len(a) for j in flow.jobs[3].jobs if j.name.startswith("pfd distill explore")
                for a in j.function_args if isinstance(a, Structure)}
    assert md_cells == {8, 64}
    # the teacher labels strained + rattled copies too: MD alone left the student's E-V curves 23-73 meV/atom off
    perturb = maker.distill.perturb
    assert (perturb.n_frames, perturb.cell_pert_fraction, perturb.atom_pert_distance) == (100, 0.06, 0.15)
    assert set(textwrap.dedent(" ".join(pfd_atomate.__all__)).split()) >= {
        "PFDMaker", "LabelMaker", "FinetuneMaker", "DistillMaker", "Stage", "TaskGroup", "run_flow"}


def test_progress_line_counts_the_jobs_of_the_running_step(tmp_path):
    """The live line: the loop's labels and the distillation's teacher MD as counts, a running training
    with its step read from lcurve.out."""
    from pfd_atomate.cli.progress import describe

    train_dir = tmp_path / "launch" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "input.json").write_text(json.dumps({"training": {"numb_steps": 12000}}))
    (train_dir / "lcurve.out").write_text("# step rmse\n 0 1.0\n 1200 0.5\n")
    label = {"pfd_step": "label", "stage": 1, "iteration": 2, "pfd_label_keys": ["k"]}
    md, train = ({"pfd_step": "distill", "distill_step": step} for step in ("explore", "train student"))
    states = {
        1: ("COMPLETED", "pfd label", label),
        2: ("RUNNING", "pfd label", label),
        3: ("WAITING", "pfd label", label),
        # an MD task: its launcher (4, 5) is replaced by atomate2's MD job of the same name (7, 8)
        4: ("COMPLETED", "pfd distill explore 0", md),
        5: ("COMPLETED", "pfd distill explore 1", md),
        6: ("RUNNING", "a renamed job", train),  # found by its metadata, not its name
        7: ("COMPLETED", "pfd distill explore 0", md),
        8: ("RUNNING", "pfd distill explore 1", md),
    }
    line = describe(states, {6: str(tmp_path / "launch")})  # the launchers are not counted
    assert line.startswith("jobs 2/6 done")
    assert "stage 1, iteration 2: labelling 3 frames (1/3)" in line
    assert "distillation: teacher MD 2 tasks (1/2)" in line
    assert "running: distill train student step 1200/12000" in line
    waiting = {k: (("WAITING",) + v[1:] if k == 8 else v) for k, v in states.items()}
    assert "teacher MD" not in describe(waiting, {})  # not before the teacher MD starts


def test_console_filter_on_a_fresh_process_and_never_on_a_hosts_handlers(tmp_path, caplog):
    """The CLI's console shows our INFO and others' warnings only; a host's own handlers (pytest's caplog, shared
    across tests) stay untouched, so other libraries' INFO records still reach them after a ``pfd`` command."""
    import logging
    import subprocess
    import sys

    script = textwrap.dedent("""
        import logging
        from pfd_atomate.cli.main import _quiet_upstream
        _quiet_upstream()
        logging.getLogger("fireworks.core").setLevel(logging.DEBUG)
        logging.getLogger("fireworks.core").info("upstream-info")
        logging.getLogger("fireworks.core").warning("upstream-warning")
        logging.getLogger("pfd_atomate.x").info("own-info")
    """)
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    assert "own-info" in err and "upstream-warning" in err and "upstream-info" not in err

    assert invoke("status", str(tmp_path / "no-run"))[0] == 2  # a command that sets up the console
    with caplog.at_level(logging.INFO):
        logging.getLogger("jobflow.core.job").info("jobflow-info-after-cli")
    assert "jobflow-info-after-cli" in caplog.text
