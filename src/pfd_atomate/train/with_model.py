"""The one seam between a model in the JobStore and atomate2's force-field Makers.

atomate2 takes the force field as a Maker setting (``force_field_name``, ``calculator_kwargs``),
not as a job input, while a PFD model is the output of an earlier job. :func:`run_with_model`
closes that gap once for every force-field Maker (``ForceFieldMDMaker``, ``ForceFieldStaticMaker``,
and Flow Makers holding them: ``PhononMaker``, ``ForceFieldEosMaker``): it materializes the stored
model on the worker, points a copy of the Maker at the file and replaces itself with that Maker's
own job or Flow. The result under this job's uuid is atomate2's task
document (e.g. ``ForceFieldTaskDocument``), so users query it as any atomate2 force-field run.

The replacing job reads the model from the worker's model cache (``$PFD_MODEL_CACHE``): the
workers of one run share that folder, as atomate2's jobs share their run folders (``prev_dir``).
"""

from __future__ import annotations

import dataclasses

from jobflow import CURRENT_JOB, Maker, Response, job
from pymatgen.core import Structure

from pfd_atomate.data import Dataset, ModelFile, as_model_file
from pfd_atomate.train.base import TrainerBackend


def atomate2_force_field_name(name):
    """atomate2 wants a dotted calculator path as a monty dict; MLFF names pass through."""
    if isinstance(name, str) and "." in name and not name.startswith("MLFF."):
        module, _, attr = name.rpartition(".")
        return {"@module": module, "@callable": attr}
    return name


def point_at(maker: Maker, force_field_name, calculator_kwargs: dict) -> Maker:
    """A copy of ``maker`` whose force-field Makers, itself or nested (a ``PhononMaker``'s
    displacement Maker, an EOS Maker's relax Maker), use ``force_field_name``/``calculator_kwargs``.

    Raises
    ------
    ValueError: ``maker`` neither is nor holds an atomate2 force-field Maker.
    """
    if _is_force_field_maker(maker):
        return dataclasses.replace(
            maker,
            force_field_name=atomate2_force_field_name(force_field_name),
            calculator_kwargs={**maker.calculator_kwargs, **calculator_kwargs},
            calculator_meta=None,  # derived again from force_field_name
        )
    nested = {f.name: point_at(value, force_field_name, calculator_kwargs)
              for f in dataclasses.fields(maker) if _is_force_field_maker(value := getattr(maker, f.name))}
    if not nested:
        raise ValueError(f"{type(maker).__name__} is not, and holds no, atomate2 force-field Maker (no force_field_name)")
    return dataclasses.replace(maker, **nested)


def _is_force_field_maker(obj) -> bool:
    return isinstance(obj, Maker) and hasattr(obj, "calculator_kwargs") and hasattr(obj, "force_field_name")


@job
def run_with_model(
    maker: Maker, backend: TrainerBackend, model: ModelFile, structure: Structure | Dataset,
    make_kwargs: dict | None = None,
) -> Response:
    """Run the atomate2 force-field ``maker`` on ``structure`` with a stored ``model``.

    Parameters
    ----------
    maker: an atomate2 force-field Maker (its ``force_field_name`` and calculator are replaced).
    backend: the backend that reads ``model`` (it knows the ASE calculator).
    model: the model (usually an ``OutputReference`` to a training job's ``model``).
    structure: the input of the Maker's ``make``: a structure, or a dataset for a Maker of many
        structures (a :class:`~pfd_atomate.label.flows.LabelMaker` holding a ``ForceFieldStaticMaker``).
    make_kwargs: further arguments of ``maker.make`` (e.g. a ``PhononMaker``'s ``supercell_matrix``).

    Returns
    -------
    ``Response(replace=<the Maker's job or Flow>)``: it keeps this job's name and metadata and adds
    ``pfd_model_sha256`` and ``pfd_device`` (where the model runs: "cpu" or "cuda").

    Raises
    ------
    ValueError: no model, or elements of ``structure`` the model does not know.
    """
    model = as_model_file(model)
    if model is None:
        raise ValueError(f"{maker.name}: no model to run; the upstream training produced none")
    elements = structure.elements if isinstance(structure, Dataset) else sorted({s.specie.symbol for s in structure})
    backend.check_elements(elements, model=model)
    replacement = point_at(maker, *backend.force_field_spec(model)).make(structure, **(make_kwargs or {}))
    if CURRENT_JOB.job is not None:
        replacement.name = CURRENT_JOB.job.name  # "pfd explore s0 i1 g0 T600 #0", not "Force field MD"
    replacement.update_metadata({"pfd_model_sha256": model.sha256, "pfd_device": backend.compute_device})
    return Response(replace=replacement)
