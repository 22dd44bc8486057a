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
  branches' values (in device-name order); a reference inside longer text becomes one
  line per branch; a branch's reference to another fanned-out star on its own device
  names that device's branch.

No matching device is an error (`NoFanOutDevice`) naming the star and the selector.
Devices that join while the plan runs do not get branches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from agents.constellation.errors import ConstellationError
from agents.constellation.model import Constellation, DeviceSelector, Line, Star
from agents.constellation.references import REFERENCE_PATTERN
from devices.registry import DeviceInfo

__all__ = ["NoFanOutDevice", "expand_fan_out", "fan_out_devices", "is_fan_out"]


class NoFanOutDevice(ConstellationError):
    """A fanned-out star matches no connected device that offers its tool."""


def is_fan_out(selector: DeviceSelector | None) -> bool:
    return selector is not None and selector.each


def fan_out_devices(star: Star, devices: Sequence[DeviceInfo]) -> list[str]:
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


def _branch_id(star_id: str, device: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "-", device).strip("-") or "device"
    return f"{star_id}-{slug}"[:64]


def expand_fan_out(constellation: Constellation, devices: Sequence[DeviceInfo]) -> bool:
    """Expand every fanned-out star of a pending `constellation` in place; whether any was.

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
    branches: dict[str, dict[str, str]] = {
        star_id: {name: _branch_id(star_id, name) for name in names}
        for star_id, names in fanned.items()
    }
    taken = set(constellation.stars) - set(fanned)
    for star_id, by_device in branches.items():
        for branch in by_device.values():
            if branch in taken:
                raise ConstellationError(
                    f"star {star_id!r} fans out into {branch!r}, which is already a star's "
                    "id; rename that star",
                    item=branch,
                )
            taken.add(branch)

    stars: dict[str, Star] = {}
    for star_id, star in constellation.stars.items():
        if star_id not in branches:
            args = _rewrite(star.args, branches, device=None)
            stars[star_id] = star.model_copy(update={"args": args})
            continue
        for device, branch in branches[star_id].items():
            selector = DeviceSelector(
                name=device, min_vram_mb=star.on.min_vram_mb if star.on else None
            )
            stars[branch] = star.model_copy(
                update={
                    "id": branch,
                    "on": selector,
                    "title": f"{star.title or star_id} on {device}",
                    "args": _rewrite(star.args, branches, device=device),
                },
                deep=True,
            )
    lines: list[Line] = []
    for line in constellation.lines:
        sources = branches.get(line.source, {None: line.source})
        targets = branches.get(line.target, {None: line.target})
        same = set(sources) == set(targets) and None not in sources
        for source_device, source in sources.items():
            for target_device, target in targets.items():
                if same and source_device != target_device:
                    continue
                lines.append(line.model_copy(update={"source": source, "target": target}))
    constellation.stars = stars
    constellation.lines = list({line.key: line for line in lines}.values())
    return True


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


def _rewrite(value: Any, branches: Mapping[str, Mapping[str, str]], device: str | None) -> Any:
    """References to fanned-out stars in an argument value, as described in the module."""
    if isinstance(value, dict):
        return {key: _rewrite(item, branches, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, branches, device) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = REFERENCE_PATTERN.fullmatch(value)
    if whole is not None:
        targets = _targets(whole.group(1), branches, device)
        if targets is not None and len(targets) != 1:
            return [f"${{{target}}}" for target in targets]
        if targets is not None:
            return f"${{{targets[0]}}}"
        return value

    def replace(match: re.Match[str]) -> str:
        targets = _targets(match.group(1), branches, device)
        if targets is None:
            return match.group(0)
        return "\n".join(f"${{{target}}}" for target in targets)

    return REFERENCE_PATTERN.sub(replace, value)


def _targets(
    body: str, branches: Mapping[str, Mapping[str, str]], device: str | None
) -> list[str] | None:
    """The reference bodies one reference stands for after expansion; None: unchanged."""
    star, dot, rest = body.strip().partition(".")
    by_device = branches.get(star)
    if by_device is None or not dot:
        return None
    if device is not None and device in by_device:
        return [f"{by_device[device]}.{rest}"]
    return [f"{branch}.{rest}" for branch in by_device.values()]
