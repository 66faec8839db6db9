"""``rlaunch`` that SIGKILLs itself inside FireWorks' workflow update (tests/test_fireworks_update_window.py).

Usage: ``python kill_in_update.py POINT NAME_REGEX [rlaunch arguments ...]``. The launcher runs as
``rlaunch`` does until it completes a firework whose name matches ``NAME_REGEX`` and whose job
returned new fireworks (a ``Response(replace=...)``); inside that update it kills itself:

- ``mid-upsert``: after the first new firework was written, before the completed firework;
- ``after-upsert``: after every firework was written, before the workflow document.

Both are moments a real SIGKILL (node failure, wall time) can hit; here they are hit every time.
"""

from __future__ import annotations

import os
import re
import signal
import sys

from fireworks.core.launchpad import LaunchPad
from fireworks.scripts.rlaunch_run import rlaunch


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, name_regex: str) -> None:
    """Patch the LaunchPad methods of this process so that it dies at ``point`` (module docstring)."""
    upsert, new_id = LaunchPad._upsert_fws, LaunchPad.get_new_fw_id
    state = {"armed": False, "new_ids": 0}

    def upsert_fws(self, fws, reassign_all=False):
        # the update of a matching completed firework that brings new fireworks (negative ids until written)
        state["armed"] = any(fw.fw_id < 0 for fw in fws) and any(
            fw.fw_id > 0 and fw.state == "COMPLETED" and re.search(name_regex, fw.name) for fw in fws)
        old_new = upsert(self, fws, reassign_all)
        if state["armed"] and point == "after-upsert":
            _die()
        return old_new

    def get_new_fw_id(self, quantity=1):
        # called before each new firework is written: the second call comes after the first was written
        if state["armed"] and point == "mid-upsert":
            state["new_ids"] += 1
            if state["new_ids"] == 2:
                _die()
        return new_id(self, quantity)

    LaunchPad._upsert_fws = upsert_fws
    LaunchPad.get_new_fw_id = get_new_fw_id


if __name__ == "__main__":
    point, regex, *argv = sys.argv[1:]
    if point not in ("mid-upsert", "after-upsert"):
        raise SystemExit(f"POINT must be mid-upsert or after-upsert, not {point!r}")
    arm(point, regex)
    sys.exit(rlaunch(argv))
