"""The one place where pfd-atomate patches upstream code, each patch version-gated and named.

| module | upstream | what | waits for |
|---|---|---|---|
| :mod:`.atomate2` | atomate2 <= 0.1.5 | parse spin-restricted (RKS) CP2K outputs; CP2K input generation must not change the base input set shared by all generators | a fix of ``CalculationInput.cleanup_dft`` and a deep copy in ``Cp2kInputGenerator._get_input_set`` (no upstream issues found; both bugs are described in the module) |
| :mod:`.jobflow` | jobflow <= 0.4.0 | FireWorks: dynamic responses may reference finished jobs | ``JobFiretask`` converting responses with ``allow_external_references=True`` (external references were added in jobflow PR #392 for ``get_flow``, not for the FireWorks manager) |
| :mod:`.jobflow_remote` | jobflow-remote <= 1.0.1 | ``jf execution run`` with external references and a read-through store | ``run_remote_job`` accepting external references in responses |

Every patch checks that the installed version still has the bug before it changes anything, and
``tests/test_compat.py`` fails as soon as an upstream release no longer needs it. docs/upstream.md writes
each bug up for filing upstream, with a reproduction that needs only the upstream package.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version


def installed(package: str) -> Version:
    """The installed version of ``package``."""
    return Version(version(package))
