"""Branches for a device that joins while a constellation runs, as one edit batch.

A fanned-out star with `on: {each: true, joining: true}` takes joining devices: when a
device joins (connects for the first time, or comes back) while its constellation runs,
matches the selector and offers the tool, `branches_for` works out the edit batch that
gives it the branch it would have had if it had been there when the plan was accepted.
The batch is computed from the plan as written (`Constellation.fan_out`) by expanding it
for the devices the fanned-out stars have branches on now, and again with the new device
(`agents.constellation.fanout.expand`); the difference is:

- the new branch (`AddStar`, on the device, with the star's arguments and settings);
- its lines (`AddLine`): from what the fanned-out star waits for, to what waits for it;
- the new arguments of the stars that refer to the fanned-out star's outputs
  (`UpdateStar`): their list of outputs gains the new branch's, in device-name order.

A fanned-out star declines the device (`JoinedBranches.declined` says why) when:

- the device already has a branch of it (it reconnected after a disconnect);
- a star that would wait for the new branch or refer to its output is no longer
  pending (it is ready, running or finished): what waits for all branches started
  without it, so the device is too late;
- such a star was edited since the plan was accepted (its references are no longer
  the expansion's), or the new branch's id is taken.

The batch and the record it leaves (`JoinedBranches.record`, which names the device
among the fanned-out star's devices) go through the orchestrator's edit path
(`Orchestrator.branch_joined_device`): a new version like any edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agents.constellation.edits import AddLine, AddStar, Edit, EditBatch, StarChanges, UpdateStar
from agents.constellation.fanout import branch_id, expand, fan_out_devices
from agents.constellation.model import (
    Constellation,
    FanOutRecord,
    Line,
    StarSpec,
    StarStatus,
)
from devices.registry import DeviceInfo

__all__ = ["JoinedBranches", "branches_for", "takes_joining"]


@dataclass(frozen=True, slots=True)
class JoinedBranches:
    """What a device that joined gets in one constellation.

    `batch` adds its branches (None: it gets none); `record` is the constellation's
    `fan_out` once the batch is applied; `branches` maps each fanned-out star that takes
    the device to its new branch; `declined` each one that does not to why."""

    device: str
    batch: EditBatch | None = None
    record: FanOutRecord | None = None
    branches: dict[str, str] = field(default_factory=dict)
    declined: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Delta:
    stars: list[StarSpec]
    lines: list[Line]
    updates: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # star -> (before, after)
    branch_of: dict[str, str]  # new branch -> its fanned-out star


def takes_joining(constellation: Constellation) -> bool:
    """Whether some fanned-out star of `constellation` takes joining devices."""
    record = constellation.fan_out
    return record is not None and bool(record.taking_joining())


def branches_for(constellation: Constellation, device: DeviceInfo) -> JoinedBranches:
    """The branches `device`, which joined just now, gets in `constellation` (see the
    module docstring). Pure: `constellation` is not changed."""
    record = constellation.fan_out
    if record is None or constellation.status.terminal:
        return JoinedBranches(device.name)
    written = {star.id: star for star in record.stars}
    now = {star_id: record.devices(star_id) for star_id in record.accepted}
    declined: dict[str, str] = {}
    candidates: list[str] = []
    for star_id in record.taking_joining():
        if device.name in now[star_id]:
            declined[star_id] = f"it already has branch {branch_id(star_id, device.name)!r}"
        elif fan_out_devices(written[star_id], [device]):
            candidates.append(star_id)
    delta = None
    while candidates:
        delta = _delta(record, written, now, candidates, device.name)
        blocked = _blocked(constellation, delta, candidates, device.name)
        if not blocked:
            break
        declined.update(blocked)
        candidates = [star_id for star_id in candidates if star_id not in blocked]
    if not candidates or delta is None:
        return JoinedBranches(device.name, declined=declined)

    stars = constellation.stars
    new_ids = {spec.id for spec in delta.stars}
    edits: list[Edit] = [AddStar(star=spec) for spec in delta.stars]
    edits += [
        AddLine(line=line)
        for line in delta.lines
        if all(end in stars or end in new_ids for end in (line.source, line.target))
    ]
    edits += [
        UpdateStar(id=star_id, changes=StarChanges(args=after))
        for star_id, (_, after) in delta.updates.items()
        if star_id in stars
    ]
    branches = {delta.branch_of[spec.id]: spec.id for spec in delta.stars}
    joined = {**record.joined}
    for star_id in candidates:
        joined[star_id] = [*joined.get(star_id, ()), device.name]
    named = ", ".join(f"{branch} of {star_id}" for star_id, branch in sorted(branches.items()))
    return JoinedBranches(
        device.name,
        batch=EditBatch(edits=edits, rationale=f"device {device.name} joined: {named}"),
        record=record.model_copy(update={"joined": joined}),
        branches=branches,
        declined=declined,
    )


def _delta(
    record: FanOutRecord,
    written: dict[str, StarSpec],
    now: dict[str, list[str]],
    candidates: list[str],
    device: str,
) -> _Delta:
    """What expanding the written plan with `device` among `candidates`' devices adds
    to expanding it as it is now."""
    later = {
        star_id: [*names, device] if star_id in candidates else names
        for star_id, names in now.items()
    }
    before_stars, before_lines = expand(written, record.lines, now, record.accepted)
    after_stars, after_lines = expand(written, record.lines, later, record.accepted)
    known = {line.key for line in before_lines}
    updates = {
        star_id: (star.args, after_stars[star_id].args)
        for star_id, star in before_stars.items()
        if after_stars[star_id].args != star.args
    }
    return _Delta(
        stars=[star for star_id, star in after_stars.items() if star_id not in before_stars],
        lines=[line for line in after_lines if line.key not in known],
        updates=updates,
        branch_of={branch_id(star_id, device): star_id for star_id in candidates},
    )


def _blocked(
    constellation: Constellation, delta: _Delta, candidates: list[str], device: str
) -> dict[str, str]:
    """The fanned-out stars whose new branch cannot be added now, and why."""
    stars = constellation.stars
    blocked: dict[str, str] = {}
    for spec in delta.stars:
        if spec.id in stars:
            blocked.setdefault(
                delta.branch_of[spec.id],
                f"its branch's id {spec.id!r} is taken by another star",
            )
    for line in delta.lines:
        target = stars.get(line.target)
        if line.source in delta.branch_of and target is not None and _started(target.status):
            blocked.setdefault(
                delta.branch_of[line.source],
                f"{line.target!r}, which waits for its branches, is already {target.status}",
            )
    for star_id, (before, after) in delta.updates.items():
        star = stars.get(star_id)
        if star is None:
            continue  # removed by an edit: nothing refers to the new branch
        text = json.dumps(after)
        culprits = [c for c in candidates if f"${{{branch_id(c, device)}." in text]
        if _started(star.status):
            why = f"{star_id!r}, which refers to its outputs, is already {star.status}"
        elif star.args != before:
            why = (
                f"{star_id!r}, which refers to its outputs, was edited since the plan was accepted"
            )
        else:
            continue
        for culprit in culprits:
            blocked.setdefault(culprit, why)
    return blocked


def _started(status: StarStatus) -> bool:
    """Past waiting: a star that is ready, running or finished gains no upstream."""
    return status is not StarStatus.PENDING
