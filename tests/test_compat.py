"""The upstream patches of pfd_atomate.compat are still needed: each test fails (and says which patch
to remove) once the installed upstream release no longer has the bug."""

from __future__ import annotations

import pytest


def test_atomate2_still_cannot_parse_restricted_cp2k_runs():
    from atomate2.cp2k.schemas.calculation import CalculationInput

    from pfd_atomate.compat import atomate2

    import pfd_atomate.label  # noqa: F401  (applies the patch)

    assert CalculationInput.cleanup_dft({"rks": "RKS", "multiplicity": 1}) == {"rks": "RKS", "multiplicity": 1}
    # the unpatched validator, as atomate2 ships it, still fails: else remove pfd_atomate.compat.atomate2
    original = CalculationInput.__pydantic_decorators__.field_validators["cleanup_dft"]
    assert original.func.__func__.__name__ == "_cleanup_dft_rks_safe"
    import importlib
    import sys

    saved = {k: v for k, v in sys.modules.items() if k.startswith("atomate2.cp2k.schemas")}
    try:
        for k in saved:
            del sys.modules[k]
        fresh = importlib.import_module("atomate2.cp2k.schemas.calculation")
        with pytest.raises(AttributeError):
            fresh.CalculationInput.cleanup_dft({"rks": "RKS", "multiplicity": 1})
    finally:
        sys.modules.update(saved)
    assert atomate2.installed("atomate2") <= atomate2.FIXED_AFTER


def test_cp2k_input_generation_leaves_labeller_keys_and_other_labellers_alone():
    """Writing one CP2K input must change neither that labeller's key nor another labeller's settings
    (atomate2 <= 0.1.5 writes the user's settings into the base input set every generator shares)."""
    from ase.build import bulk
    from atomate2.cp2k.sets import base
    from pymatgen.io.ase import AseAtomsAdaptor

    from pfd_atomate.compat import atomate2
    from pfd_atomate.label import cp2k_static_maker
    from pfd_atomate.label.cache import labeller_key

    si = cp2k_static_maker(kpoint_density=40)
    before = labeller_key(si)
    si.input_set_generator.get_input_set(AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43)))
    assert labeller_key(si) == before
    other = cp2k_static_maker(basis_and_potential={"C": ("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q4")}, cutoff=400)
    text = str(other.input_set_generator.get_input_set(
        AseAtomsAdaptor.get_structure(bulk("C", "diamond", a=3.57))).cp2k_input)
    assert "GTH-PBE-q4" in text and "&KIND Si" not in text
    # atomate2's own recursive_update, as it ships, still writes into its argument: else remove this patch
    probe = {"inner": {}}
    atomate2.upstream_recursive_update(probe, {"inner": {"probe": 1}})
    assert probe == {"inner": {"probe": 1}}
    assert base.recursive_update is atomate2._recursive_update_copy
    assert atomate2.installed("atomate2") <= atomate2.FIXED_AFTER


def test_jobflow_fireworks_task_still_refuses_external_references():
    from pfd_atomate.compat import jobflow

    assert jobflow.needed(), "jobflow's JobFiretask handles external references now: remove compat.jobflow"


def test_jobflow_remote_still_refuses_external_references():
    pytest.importorskip("jobflow_remote")
    from pfd_atomate.compat import jobflow_remote

    assert jobflow_remote.needed(), "jobflow-remote accepts external references now: remove the get_flow swap"


def test_patches_restore_what_they_swap():
    import jobflow.managers.fireworks as manager
    import jobflow_remote.jobs.run as remote_run

    from pfd_atomate.compat.jobflow import external_references_in_responses
    from pfd_atomate.compat.jobflow_remote import remote_run_with_external_references

    before = manager.flow_to_workflow, remote_run.loadfn, remote_run.get_flow
    with external_references_in_responses(lambda *a, **k: None):
        assert manager.flow_to_workflow is not before[0]
    with remote_run_with_external_references(lambda *a, **k: None):
        assert remote_run.loadfn is not before[1] and remote_run.get_flow is not before[2]
    assert (manager.flow_to_workflow, remote_run.loadfn, remote_run.get_flow) == before


def _upstream_reproductions() -> list[str]:
    """The Python blocks of docs/upstream.md, in order."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "upstream.md").read_text()
    return [block.split("\n", 1)[1] for block in text.split("```")[1::2] if block.startswith("python\n")]


def _run_reproduction(code: str, tmp_path, *args: str):
    """A reproduction run in a fresh interpreter that never imports pfd_atomate (so nothing is patched)."""
    import subprocess
    import sys

    script = tmp_path / "repro.py"
    script.write_text(code)
    return subprocess.run([sys.executable, "-W", "ignore", str(script), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_upstream_reproductions_in_the_docs_show_the_bugs(tmp_path):
    """docs/upstream.md's reproductions, run as written against upstream alone, show what the doc says they show
    (else the write-up, or the patch it explains, is out of date)."""
    from pfd_atomate.workflows import start_server

    rks, leak, fireworks = _upstream_reproductions()
    run = _run_reproduction(rks, tmp_path)
    assert run.returncode != 0 and "AttributeError: 'int' object has no attribute 'upper'" in run.stderr
    run = _run_reproduction(leak, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "['basis_and_potential']"
    server = start_server(tmp_path / "db")
    try:
        run = _run_reproduction(fireworks, tmp_path, server.host, str(server.port))
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "[('loop', 'FIZZLED'), ('make_number', 'COMPLETED')]" in run.stdout
    assert "The following jobs were not found in the jobs array" in run.stdout + run.stderr
