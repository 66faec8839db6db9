"""jobflow <= 0.4.0: FireWorks fizzles a job whose ``Response(replace=...)`` reads finished jobs.

The fine-tune loop replaces itself with an iteration whose jobs read outputs of jobs that finished
earlier (the training sets, the previous model): *external references* of the replacement.
``jobflow.managers.fireworks.JobFiretask.run_task`` converts every dynamic response with the
module-level ``flow_to_workflow``, i.e. ``allow_external_references=False``, and fails with "The
following jobs were not found in the jobs array". :func:`external_references_in_responses` swaps
that converter for one with external references allowed, for the length of one job (one firework
runs at a time in a launcher process), and puts it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from packaging.version import Version

from pfd_atomate.compat import installed

#: last jobflow release known to need the patch
FIXED_AFTER = Version("0.4.0")


def needed() -> bool:
    """Whether this jobflow's FireWorks task converts responses without external references."""
    import inspect

    from jobflow.managers.fireworks import JobFiretask

    source = inspect.getsource(JobFiretask.run_task)
    return installed("jobflow") <= FIXED_AFTER and "allow_external_references" not in source


@contextlib.contextmanager
def external_references_in_responses(convert: Callable[..., Any]) -> Iterator[None]:
    """Within the block, jobflow's FireWorks task converts dynamic responses with ``convert``.

    ``convert(flow, store, **kwargs)`` must return a FireWorks ``Workflow`` (see
    :func:`pfd_atomate.workflows.fireworks.flow_to_workflow`). Does nothing when this jobflow does
    not need it.
    """
    if not needed():
        yield
        return
    import jobflow.managers.fireworks as manager

    original = manager.flow_to_workflow
    manager.flow_to_workflow = convert
    try:
        yield
    finally:
        manager.flow_to_workflow = original
