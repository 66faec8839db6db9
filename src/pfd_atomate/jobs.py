"""The report job that closes a PFD flow."""

from __future__ import annotations

from typing import Any

from jobflow import job

from pfd_atomate.finetune.schemas import FinetuneOutput
from pfd_atomate.schemas import ModelLineage, PFDOutput, StoredObject


def _dump(x: Any) -> Any:
    return x.model_dump() if hasattr(x, "model_dump") else x


def _teacher_test(ft: FinetuneOutput) -> dict | None:
    """The final teacher's test on the last iteration set, which it was never trained on."""
    if not ft.iterations:
        return None
    last = ft.iterations[-1]
    return {
        "n_frames": last.n_labelled,
        "energy_rmse": last.energy_rmse,
        "force_rmse": last.force_rmse,
        "accurate_ratio": last.accurate_ratio,
    }


@job(output_schema=PFDOutput)
def pfd_report(
    formula: str,
    n_structures: int,
    initial_label: dict,
    finetune: FinetuneOutput | dict,
    finetune_job: str,
    foundation: dict,
    distill: dict | None = None,
    distill_job: str | None = None,
) -> PFDOutput:
    """Gather the run's numbers and object locations into a :class:`PFDOutput`.

    Parameters
    ----------
    formula, n_structures: description of the input.
    initial_label: {"n_labelled", "n_requested", "labeller", "job"} of the initial labelling.
    finetune: output of the fine-tune loop.
    finetune_job: uuid of the loop's first job (its output holds the final model).
    foundation: {"backend", "base_model"} of the foundation model.
    distill: output of the distillation, if run.
    distill_job: uuid of the distillation gather job.
    """
    ft = finetune if isinstance(finetune, FinetuneOutput) else FinetuneOutput.model_validate(
        {k: v for k, v in finetune.items() if not k.startswith("@")}
    )
    teacher = ft.model
    lineage = [ModelLineage(role="foundation", backend=foundation["backend"], sha256=foundation.get("sha256"))]
    lineage.append(
        ModelLineage(
            role="teacher",
            backend=teacher.backend if teacher else foundation["backend"],
            sha256=teacher.sha256 if teacher else None,
            parent_sha256=teacher.parent_sha256 if teacher else None,
            location=StoredObject(job_uuid=finetune_job, field="model", sha256=teacher.sha256 if teacher else None),
        )
    )
    datasets = {
        "initial": StoredObject(job_uuid=initial_label["job"], field="dataset"),
        "held_out_dft": StoredObject(job_uuid=finetune_job, field="test_set"),
    }
    student_teacher = student_dft = n_distill = None
    if distill is not None:
        d = _dump(distill)
        model = d.get("model") or {}
        model = _dump(model)
        lineage.append(
            ModelLineage(
                role="student",
                backend=model.get("backend", ""),
                sha256=model.get("sha256"),
                parent_sha256=None,
                location=StoredObject(job_uuid=distill_job, field="model", sha256=model.get("sha256")),
            )
        )
        student_teacher, student_dft, n_distill = d.get("teacher_test"), d.get("dft_test"), d.get("n_train_frames")
    n_initial = int(initial_label["n_labelled"])
    n_reused = int(initial_label.get("n_reused") or 0) + ft.n_reused_labels
    loop_failures = sum(r.n_label_failures for r in ft.iterations)
    return PFDOutput(
        formula=formula,
        n_structures=n_structures,
        n_initial_labels=n_initial,
        n_loop_labels=ft.n_dft_labels,
        n_dft_labels=n_initial + ft.n_dft_labels,
        n_reused_labels=n_reused,
        n_paid_labels=n_initial + ft.n_dft_labels - n_reused,
        n_label_failures=int(initial_label["n_requested"]) - n_initial + loop_failures,
        labeller=str(initial_label.get("labeller", "")),
        n_iterations=ft.n_iterations,
        converged=ft.converged,
        iterations=ft.iterations,
        teacher_test=_teacher_test(ft),
        student_teacher_test=student_teacher,
        student_dft_test=student_dft,
        n_distill_frames=n_distill,
        lineage=lineage,
        datasets=datasets,
    )
