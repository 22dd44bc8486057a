"""Fan-out: a star whose `on` names a set of devices becomes one star per device.

A plan may say `on: [atlas, borealis]` (a list of names) or `on: {each: true, labels:
[linux]}` (every device that matches the selector's labels, platform, GPU and names).
When the orchestrator accepts the plan, `expand_fan_out` replaces such a star `disk` by
one branch per matching connected device that offers its tool, `disk-atlas`,
`disk-borealis`, ..., each `on` its device, with the star's arguments and settings:

- a line into `disk` goes into every branch; a line out of `disk` leaves every branch,
  so a downstream star waits for all of them (and, as for any upstream, is skipped when
  a branch fails, unless the branch has `allow_failure`);
- two fanned-out stars on the same devices are joined branch by branch (`rm-atlas` ->
  `disk-atlas`), otherwise every branch of one to every branch of the other;
- a downstream argument that is exactly `${disk.output...}` becomes the list of the
  branches' values (in device-name order; the one value itself when there is one branch,
  unless `disk` takes joining devices); a reference inside longer text becomes one line
  per branch; a branch's reference to another fanned-out star on its own device names
  that device's branch.

No matching device is an error (`NoFanOutDevice`) naming the star and the selector.
A fanned-out star with `joining: true` also gets branches on devices that join while the
plan runs (`agents.constellation.joining`); for it the plan as written is kept in
`Constellation.fan_out`. `expand` is the expansion itself, for any set of devices.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from agents.constellation.errors import ConstellationError
from agents.constellation.model import (
    Constellation,
    DeviceSelector,
    FanOutRecord,
    Line,
    StarSpec,
)
from agents.constellation.references import REFERENCE_PATTERN
from devices.registry import DeviceInfo

__all__ = [
    "NoFanOutDevice",
    "branch_id",
    "expand",
    "expand_fan_out",
    "fan_out_devices",
    "is_fan_out",
]

S = TypeVar("S", bound=StarSpec)


class NoFanOutDevice(ConstellationError):
    """A fanned-out star matches no connected device that offers its tool."""


def is_fan_out(selector: DeviceSelector | None) -> bool:
    return selector is not None and selector.each


def fan_out_devices(star: StarSpec, devices: Sequence[DeviceInfo]) -> list[str]:
    """The names of the connected devices a fanned-out star runs on, sorted."""
    selector = star.on
    assert selector is not None
    tool = star.effective_tool
    return sorted(
        device.name
        for device in devices
        if (not selector.names or device.name in selector.names)
        and device.mismatch(
            tool=tool,
            name=selector.name,
            labels=selector.labels,
            platform=selector.platform,
            gpu=selector.gpu,
            min_vram_mb=selector.min_vram_mb,
        )
        is None
    )


def branch_id(star_id: str, device: str) -> str:
    """The id of fanned-out star `star_id`'s branch on `device`."""
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "-", device).strip("-") or "device"
    return f"{star_id}-{slug}"[:64]


def expand_fan_out(constellation: Constellation, devices: Sequence[DeviceInfo]) -> bool:
    """Expand every fanned-out star of a pending `constellation` in place; whether any was.
    When one takes joining devices, the plan as written is kept in `constellation.fan_out`.

    Raises `NoFanOutDevice` (nothing changed) when a fanned-out star matches no device,
    and `ConstellationError` when a branch id is already taken."""
    fanned = {
        star_id: fan_out_devices(star, devices)
        for star_id, star in constellation.stars.items()
        if is_fan_out(star.on)
    }
    if not fanned:
        return False
    for star_id, names in fanned.items():
        if not names:
            selector = constellation.stars[star_id].on
            raise NoFanOutDevice(
                f"star {star_id!r} fans out over {_describe(selector)}, but no connected "
                f"device matches it and offers {constellation.stars[star_id].effective_tool!r}",
                item=star_id,
            )
    stars, lines = expand(constellation.stars, constellation.lines, fanned)
    if any(_joining(constellation.stars[star_id]) for star_id in fanned):
        constellation.fan_out = FanOutRecord(
            stars=[star.spec() for star in constellation.stars.values()],
            lines=list(constellation.lines),
            accepted=fanned,
        )
    constellation.stars = stars
    constellation.lines = lines
    return True


def expand(
    stars: Mapping[str, S],
    lines: Sequence[Line],
    devices_of: Mapping[str, Sequence[str]],
    accepted: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, S], list[Line]]:
    """The stars and lines of a plan once each fanned-out star in `devices_of` has a
    branch on each of its devices (as the module docstring says); `stars` and `lines`
    are not changed. Two fanned-out stars are joined branch by branch when they had the
    same devices when the plan was accepted (`accepted`, by default `devices_of`); then a
    branch with no partner on the other side (its device joined later) is joined to
    every branch there. Raises `ConstellationError` when a branch id is already taken."""
    accepted = devices_of if accepted is None else accepted
    branches: dict[str, dict[str, str]] = {
        star_id: {name: branch_id(star_id, name) for name in sorted(names)}
        for star_id, names in devices_of.items()
    }
    listed = {star_id for star_id in branches if _joining(stars[star_id])}
    taken = set(stars) - set(branches)
    for star_id, by_device in branches.items():
        for branch in by_device.values():
            if branch in taken:
                raise ConstellationError(
                    f"star {star_id!r} fans out into {branch!r}, which is already a star's "
                    "id; rename that star",
                    item=branch,
                )
            taken.add(branch)

    expanded: dict[str, S] = {}
    for star_id, star in stars.items():
        if star_id not in branches:
            args = _rewrite(star.args, branches, None, listed)
            expanded[star_id] = star.model_copy(update={"args": args})
            continue
        for device, branch in branches[star_id].items():
            selector = DeviceSelector(
                name=device, min_vram_mb=star.on.min_vram_mb if star.on else None
            )
            expanded[branch] = star.model_copy(
                update={
                    "id": branch,
                    "on": selector,
                    "title": f"{star.title or star_id} on {device}",
                    "args": _rewrite(star.args, branches, device, listed),
                },
                deep=True,
            )
    joined: list[Line] = []
    for line in lines:
        sources = branches.get(line.source, {None: line.source})
        targets = branches.get(line.target, {None: line.target})
        paired = (
            line.source in branches
            and line.target in branches
            and set(accepted.get(line.source, ())) == set(accepted.get(line.target, ()))
        )
        for source_device, source in sources.items():
            for target_device, target in targets.items():
                if (
                    paired
                    and source_device != target_device
                    and source_device in targets
                    and target_device in sources
                ):
                    continue
                joined.append(line.model_copy(update={"source": source, "target": target}))
    return expanded, list({line.key: line for line in joined}.values())


def _joining(star: StarSpec) -> bool:
    return star.on is not None and star.on.joining


def _describe(selector: DeviceSelector | None) -> str:
    if selector is None:
        return "every device"
    parts = []
    if selector.names:
        parts.append(", ".join(selector.names))
    if selector.labels:
        parts.append(f"label(s) {', '.join(selector.labels)}")
    if selector.platform:
        parts.append(f"platform {selector.platform}")
    if selector.gpu:
        parts.append("a GPU")
    return "; ".join(parts) or "every device"


def _rewrite(
    value: Any,
    branches: Mapping[str, Mapping[str, str]],
    device: str | None,
    listed: Collection[str],
) -> Any:
    """References to fanned-out stars in an argument value, as described in the module;
    a whole reference to a star in `listed` is a list even of one branch."""
    if isinstance(value, dict):
        return {key: _rewrite(item, branches, device, listed) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, branches, device, listed) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = REFERENCE_PATTERN.fullmatch(value)
    if whole is not None:
        found = _targets(whole.group(1), branches, device, listed)
        if found is None:
            return value
        targets, as_list = found
        if as_list:
            return [f"${{{target}}}" for target in targets]
        return f"${{{targets[0]}}}"

    def replace(match: re.Match[str]) -> str:
        found = _targets(match.group(1), branches, device, listed)
        if found is None:
            return match.group(0)
        return "\n".join(f"${{{target}}}" for target in found[0])

    return REFERENCE_PATTERN.sub(replace, value)


def _targets(
    body: str,
    branches: Mapping[str, Mapping[str, str]],
    device: str | None,
    listed: Collection[str],
) -> tuple[list[str], bool] | None:
    """The reference bodies one reference stands for after expansion, and whether a
    whole reference becomes a list; None: unchanged."""
    star, dot, rest = body.strip().partition(".")
    by_device = branches.get(star)
    if by_device is None or not dot:
        return None
    if device is not None and device in by_device:
        return [f"{by_device[device]}.{rest}"], False
    targets = [f"{branch}.{rest}" for branch in by_device.values()]
    return targets, len(targets) != 1 or star in listed
