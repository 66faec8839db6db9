"""Put a FireWorks LaunchPad back in order after a launcher was killed inside a workflow update.

FireWorks (2.1) completes a firework in ``LaunchPad.complete_launch``: the launch is written
COMPLETED with its ``FWAction``, then ``_refresh_wf`` takes the workflow's lock and
``_update_wf`` writes every firework the action changed, one by one (the new fireworks of a
``Response(replace/addition/detour)`` first, then the completed firework and its children), and
only then the workflow document (its ``nodes``, ``links`` and ``fw_states``). A launcher killed
between those writes (a few ms for each job that returns a Response, such as PFD's loop and
labelling jobs) leaves:

- the workflow ``locked``: every later update waits 5 minutes and fails;
- the new fireworks in the ``fireworks`` collection, READY, listed in no workflow (*orphans*). A
  launcher that checks one out waits 5 minutes for its workflow's lock and dies with "Could not
  find workflow in database" (the job does not run);
- the completed firework ``RUNNING`` (killed before it was written; ``lpad detect_lostruns
  --refresh`` finds it) or ``COMPLETED`` while the workflow document still says ``RUNNING``
  (killed after; nothing finds it and the flow never ends).

:func:`repair_launchpad` returns the LaunchPad to the workflow documents' state, the last one
written whole: it releases the locks, deletes the orphans (whose jobs cannot have run), and marks such a
firework ``RUNNING`` again. ``lpad detect_lostruns --time 0 --rerun --refresh`` then finds it
(a RUNNING firework with a COMPLETED launch) and re-applies its stored action, so the job is
not run again. ``tests/test_fireworks_update_window.py`` has a launcher SIGKILL itself at both points.

Waits for FireWorks to write a dynamic update atomically; no upstream issue or fix is known
(fireworks 2.1.4, ``LaunchPad._update_wf``); docs/upstream.md (item 5) writes it up for filing.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from fireworks import LaunchPad


class LaunchpadRepair(BaseModel):
    """What :func:`repair_launchpad` found (and, unless ``dry_run``, changed)."""

    unlocked: list[int] = Field(default_factory=list, description="one firework id of each workflow unlocked")
    deleted_orphans: list[int] = Field(default_factory=list,
                                       description="fireworks in no workflow (their jobs never ran), deleted")
    restored_running: list[int] = Field(
        default_factory=list,
        description="fireworks COMPLETED whose workflow says RUNNING, marked RUNNING for detect_lostruns --refresh")
    dry_run: bool = False


def orphan_fireworks(lp: LaunchPad) -> list[int]:
    """Ids of fireworks that no workflow document lists (sorted).

    Besides an interrupted update (module docstring), ``LaunchPad.add_wf`` makes them for a moment
    (it writes the fireworks before the workflow): call this when nothing submits or runs.
    """
    listed: set[int] = set()
    for wf in lp.workflows.find({}, {"nodes": 1}):
        listed.update(wf["nodes"])
    return sorted(fw["fw_id"] for fw in lp.fireworks.find({}, {"fw_id": 1}) if fw["fw_id"] not in listed)


def _completed_but_running_in_workflow(lp: LaunchPad) -> list[int]:
    """Fireworks written COMPLETED whose workflow document still says RUNNING: an update cut short."""
    found: list[int] = []
    for wf in lp.workflows.find({}, {"fw_states": 1}):
        running = [int(fw_id) for fw_id, state in (wf.get("fw_states") or {}).items() if state == "RUNNING"]
        if running:
            found += [fw["fw_id"] for fw in lp.fireworks.find({"fw_id": {"$in": running}, "state": "COMPLETED"},
                                                               {"fw_id": 1})]
    return sorted(found)


def repair_launchpad(lp: LaunchPad, dry_run: bool = False) -> LaunchpadRepair:
    """Undo what a launcher killed inside a workflow update left (module docstring); then run
    ``lpad detect_lostruns --time 0 --rerun --refresh`` and start the launchers again.

    Call it only when no launcher (``rlaunch``/``qlaunch`` job) and no submission is alive, as for
    ``detect_lostruns --time 0``: a live launcher's update in progress looks the same.

    Orphans are deleted with their launches (``LaunchPad.delete_fws``): their jobs never ran, because
    a launcher that checks one out refreshes its workflow before running it, which fails (after
    ``WFLOCK_EXPIRATION_SECS``, 5 minutes) with "Could not find workflow in database" and leaves it
    FIZZLED with a RUNNING launch. The re-applied action creates them again, with new ids.

    Parameters
    ----------
    lp: the LaunchPad.
    dry_run: only report what would be changed.

    Returns
    -------
    LaunchpadRepair: the workflows unlocked, the orphans deleted, the fireworks marked RUNNING.
    """
    report = LaunchpadRepair(
        unlocked=[wf["nodes"][0] for wf in lp.workflows.find({"locked": {"$exists": True}}, {"nodes": 1})],
        deleted_orphans=orphan_fireworks(lp),
        restored_running=_completed_but_running_in_workflow(lp),
        dry_run=dry_run,
    )
    if dry_run:
        return report
    lp.workflows.update_many({"locked": {"$exists": True}}, {"$unset": {"locked": ""}})
    if report.deleted_orphans:
        with contextlib.redirect_stdout(io.StringIO()):  # delete_fws prints its ids; the report names them
            lp.delete_fws(report.deleted_orphans)
    for fw_id in report.restored_running:
        lp.fireworks.update_one({"fw_id": fw_id, "state": "COMPLETED"}, {"$set": {"state": "RUNNING"}})
    return report
