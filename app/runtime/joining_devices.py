"""Devices that join while constellations run get the branches of fan-outs that take them.

`JoiningDevices` is an `EventStream` listener owned by the runtime: on each
`device.joined` (a device connected, or came back) it asks the orchestrator, once that
event has reached every listener and subscriber, to give the device its branches in every
running constellation with a fan-out that takes joining devices
(`Orchestrator.branch_joined_device`, an edit batch like any other; the rules are
`agents.constellation.joining`'s). A device that gets no branch is logged with why.
"""

from __future__ import annotations

import asyncio
import logging

from agents.constellation.joining import takes_joining
from agents.events import DeviceJoined, Event
from agents.orchestrator import Orchestrator, OrchestratorError

__all__ = ["JoiningDevices"]

log = logging.getLogger("orrery.runtime")


class JoiningDevices:
    """See the module docstring. Listen with `stream.listen(JoiningDevices(orchestrator))`
    on the orchestrator's own stream; events arrive on the event loop's thread."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def __call__(self, event: Event) -> None:
        if isinstance(event, DeviceJoined):
            asyncio.get_running_loop().call_soon(self.branch, event.device)

    def branch(self, device: str) -> dict[str, int]:
        """Give `device` its branches in every running constellation whose fan-outs take
        joining devices; the constellations that got some, each with its new version."""
        versions: dict[str, int] = {}
        for constellation in self.orchestrator.constellations():
            if constellation.status.terminal or not takes_joining(constellation):
                continue
            try:
                version = self.orchestrator.branch_joined_device(constellation.id, device)
            except OrchestratorError:  # it finished meanwhile
                continue
            if version is not None:
                versions[constellation.id] = version
        if versions:
            log.info("device %s got branches in %s", device, ", ".join(sorted(versions)))
        return versions
