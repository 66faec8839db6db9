"""Test job (PFD step 5): M_i on D_i, convergence decision and trust-window selection."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from jobflow import Maker, job
from pydantic import BaseModel, Field

from pfd_atomate.data import Dataset, ModelFile, as_dataset, as_model_file
from pfd_atomate.evaluate.metrics import frame_errors
from pfd_atomate.evaluate.schemas import ConvergenceCriteria, TestMetrics, TrustWindow
from pfd_atomate.train.base import TrainerBackend

logger = logging.getLogger(__name__)


class EvaluateOutput(BaseModel):
    """Test of a model on labelled frames (``predicted`` lives in the ``data`` store)."""

    model_sha256: str
    metrics: TestMetrics
    converged: bool | None = Field(None, description="None when no criteria were given")
    reason: str = ""
    added_indices: list[int] = Field(description="frames of the tested set inside the trust window, to be trained on")
    n_added: int
    predicted: Dataset = Field(description="the model's labels of the same frames (for parity plots)")


@dataclass
class EvaluateMaker(Maker):
    """Test a model on a labelled dataset.

    Parameters
    ----------
    name: job name.
    backend: backend of the model.
    criteria: convergence criteria (None: only metrics).
    trust_window: which frames count as worth adding to training.
    """

    name: str = "pfd test"
    backend: TrainerBackend = field(default=None)  # type: ignore[assignment]
    criteria: ConvergenceCriteria | None = None
    trust_window: TrustWindow = field(default_factory=TrustWindow)

    @job(output_schema=EvaluateOutput, data=["predicted"])
    def make(self, model: ModelFile, dataset: Dataset) -> EvaluateOutput:
        """Energy RMSE (eV/atom) and force RMSE (eV/Å) of ``model`` on ``dataset``, per frame too.

        Raises
        ------
        ValueError: empty or unlabelled dataset.
        """
        model, dataset = as_model_file(model), as_dataset(dataset)
        if dataset is None or len(dataset) == 0:
            raise ValueError("cannot test a model on an empty dataset")
        predicted = self.backend.predict(model, dataset)
        errors = frame_errors(dataset, predicted)
        if self.criteria is not None:
            metrics = errors.to_metrics(frame_energy=self.criteria.frame_energy, frame_force=self.criteria.frame_force)
            converged, reason = self.criteria.check(metrics)
        else:
            metrics, converged, reason = errors.to_metrics(), None, ""
        added = self.trust_window.select(errors)
        logger.info(
            "test of %s on %d frames: energy RMSE %.4f eV/atom, force RMSE %.4f eV/Å, accurate %.2f%s",
            model.sha256[:12], len(dataset), metrics.energy_rmse, metrics.force_rmse, metrics.accurate_ratio,
            "" if converged is None else f" -> {'converged' if converged else 'not converged'}",
        )
        return EvaluateOutput(
            model_sha256=model.sha256,
            metrics=metrics,
            converged=converged,
            reason=reason,
            added_indices=added,
            n_added=len(added),
            predicted=predicted,
        )


# no output_schema: the output is None when nothing was compressed
@job
def compare_models(backend: TrainerBackend, model: ModelFile, reference_model: ModelFile | None,
                   dataset: Dataset) -> TestMetrics | None:
    """Energy/force RMSE of ``model`` against ``reference_model`` on the same frames (no labels needed).

    Used to check a compressed model against the model it was compressed from; ``None`` when
    there is no reference model (nothing was compressed).
    """
    model, reference_model, dataset = as_model_file(model), as_model_file(reference_model), as_dataset(dataset)
    if reference_model is None:
        return None
    errors = frame_errors(backend.predict(reference_model, dataset), backend.predict(model, dataset))
    metrics = errors.to_metrics(frame_energy=None, frame_force=None)
    logger.info("%s vs %s on %d frames: energy RMSE %.2e eV/atom, force RMSE %.2e eV/Å, max force error %.2e eV/Å",
                model.sha256[:12], reference_model.sha256[:12], len(dataset), metrics.energy_rmse,
                metrics.force_rmse, max(metrics.frame_force_max))
    return metrics
