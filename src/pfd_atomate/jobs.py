"""The report job that closes a PFD flow."""

from __future__ import annotations

from jobflow import job

from pfd_atomate.distill.schemas import DistillOutput
from pfd_atomate.finetune.schemas import FinetuneOutput
from pfd_atomate.label.schemas import LabelOutput
from pfd_atomate.schemas import ModelLineage, PFDOutput, StoredObject


@job(output_schema=PFDOutput)
def pfd_report(
    formula: str,
    n_structures: int,
    initial: LabelOutput,
    initial_job: str,
    finetune: FinetuneOutput,
    foundation: ModelLineage,
    distill: DistillOutput | None = None,
    student_backend: str | None = None,
) -> PFDOutput:
    """Gather the run's numbers and object locations into a :class:`PFDOutput`.

    Parameters
    ----------
    formula, n_structures: description of the input.
    initial: output of the initial labelling; ``initial_job`` its job uuid.
    finetune: output of the fine-tune loop.
    foundation: the foundation model (role "foundation").
    distill: output of the distillation, if run; ``student_backend`` the student's backend name.
    """
    teacher = finetune.model
    last = finetune.iterations[-1] if finetune.iterations else None
    lineage = [
        foundation,
        ModelLineage(
            role="teacher",
            backend=teacher.backend,
            sha256=teacher.sha256,
            parent_sha256=teacher.parent_sha256,
            location=StoredObject(job_uuid=finetune.model_job, field="model", sha256=teacher.sha256),
        ),
    ]
    datasets = {"initial": StoredObject(job_uuid=initial_job, field="dataset")}
    if last is not None and last.label_job:
        datasets["held_out_dft"] = StoredObject(job_uuid=last.label_job, field="dataset")
    if distill is not None:
        lineage.append(
            ModelLineage(
                role="student",
                backend=student_backend or "",
                sha256=distill.model_sha256,
                location=StoredObject(job_uuid=distill.model_job, field="model", sha256=distill.model_sha256),
            )
        )
    loop_failures = sum(r.n_label_failures for r in finetune.iterations)
    n_dft = initial.n_labelled + finetune.n_dft_labels
    n_reused = initial.n_reused + finetune.n_reused_labels
    return PFDOutput(
        formula=formula,
        n_structures=n_structures,
        n_initial_labels=initial.n_labelled,
        n_loop_labels=finetune.n_dft_labels,
        n_dft_labels=n_dft,
        n_reused_labels=n_reused,
        n_paid_labels=n_dft - n_reused,
        n_label_failures=initial.n_requested - initial.n_labelled + loop_failures,
        labeller=initial.labeller,
        n_iterations=finetune.n_iterations,
        converged=finetune.converged,
        iterations=finetune.iterations,
        teacher_test=finetune.last_test,
        student_teacher_test=None if distill is None else distill.teacher_test,
        student_dft_test=None if distill is None else distill.dft_test,
        compression_check=None if distill is None else distill.compression_check,
        n_distill_frames=None if distill is None else distill.n_train_frames,
        lineage=lineage,
        datasets=datasets,
    )
