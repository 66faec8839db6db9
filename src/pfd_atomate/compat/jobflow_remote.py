"""jobflow-remote <= 1.0.1: ``jf execution run`` refuses responses with external references.

``jobflow_remote.jobs.run.run_remote_job`` checks every ``Response(replace=...)`` with
``get_flow(..., allow_external_references=False)``; the fine-tune loop's next iteration reads
outputs of jobs that finished earlier, so the loop job would end in ``REMOTE_ERROR`` ("The following
jobs were not found in the jobs array"). Jobs with ``JobConfig(expose_store=True)`` (the label
collector, the loop's decision) must also read other jobs' outputs, which the job's own file store
does not hold. :func:`remote_run_with_external_references` runs the job with both fixed: the two
module-level names ``run_remote_job`` looks up (``loadfn``, ``get_flow``) are swapped for the
call and put back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from packaging.version import Version

from pfd_atomate.compat import installed

#: last jobflow-remote release known to need the patch
FIXED_AFTER = Version("1.0.1")


def needed() -> bool:
    """Whether this jobflow-remote checks responses without external references."""
    import inspect

    import jobflow_remote.jobs.run as remote_run

    source = inspect.getsource(remote_run.run_remote_job)
    return installed("jobflow-remote") <= FIXED_AFTER and "allow_external_references" not in source


@contextlib.contextmanager
def remote_run_with_external_references(load_input: Callable[..., Any]) -> Iterator[None]:
    """Within the block, ``run_remote_job`` reads its input with ``load_input`` and accepts
    responses that reference finished jobs. ``load_input`` is used whatever the version (it is how
    a job gets its read-through store); the ``get_flow`` swap only where it is needed."""
    import jobflow_remote.jobs.run as remote_run
    from jobflow.core.flow import get_flow

    original = remote_run.loadfn, remote_run.get_flow
    remote_run.loadfn = load_input
    if needed():
        remote_run.get_flow = functools.partial(get_flow, allow_external_references=True)
    try:
        yield
    finally:
        remote_run.loadfn, remote_run.get_flow = original
