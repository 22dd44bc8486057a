"""The one interface every front end drives Orrery through.

`OrreryApi` is satisfied by the in-process runtime (`app.runtime.Runtime`, the desktop
app's and the local CLI's) and by the remote client (`app.client.Orrery`, for a running
`orrery serve`), so a front end written against it works with either:

    async def report(api: OrreryApi) -> None:
        run = await api.submit(Path("plan.yaml"))        # or a request in words
        async for event in run.events():                 # agents.events types
            print(event.type)
        print((await run.wait()).status)
        for device in await api.devices():
            print(device.name, device.state)
        async for event in api.events(types=FLEET_EVENT_TYPES):   # the fleet, live
            ...

A request in words can be looked at before it runs: `propose` plans it and returns a
`Proposal` (its stars: device, tool, the command or path) that no device has seen;
`start_proposal` runs it, `discard_proposal` drops it:

    proposal = await api.propose("write hello into hello.txt")
    for star in proposal.stars:
        print(star.id, star.device, star.tool, star.what)
    run = await api.start_proposal(proposal.proposal)   # or discard_proposal(...)

Every method returns the control API's models (`app.control.messages`), so each shape
is defined once; `submit`, `start_proposal`, `run` and `retry` return a `Run`. Refusals
raise the errors of `app.errors` (`RequestRejected` with a code, `RunInterrupted`, ...),
whichever side refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agents.events import ConstellationFinished, Event
from app.control.messages import (
    DeviceEntry,
    Discarded,
    HistoryEntry,
    MemoryForgotten,
    MemoryHit,
    MemoryTree,
    PendingApprovalInfo,
    Proposal,
    Snapshot,
)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a constellation ended (from its `constellation.finished` event)."""

    constellation_id: str
    status: str
    reason: str | None
    failed_star: str | None
    no_capable_device: bool

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @classmethod
    def of(cls, finished: ConstellationFinished) -> RunResult:
        return cls(
            constellation_id=finished.constellation_id,
            status=finished.status,
            reason=finished.reason,
            failed_star=finished.failed_star,
            no_capable_device=finished.no_capable_device,
        )


class OrreryApi(Protocol):
    """What a front end can ask of Orrery; see the module docstring."""

    async def submit(
        self,
        plan_or_request: str | Path | None = None,
        request: str | None = None,
        *,
        plan_text: str | None = None,
        source: str = "<submitted plan>",
    ) -> Run:
        """Run a plan (a file `Path`, or YAML text with `stars`) or a request in words
        (planned by the planner model). `RequestRejected` with code `invalid_plan`,
        `plan_rejected`, `no_planner` or `no_capable_device` if it cannot run."""
        ...

    async def propose(self, request: str) -> Proposal:
        """Plan a request in words without running it: the proposal is held (for a
        while: `expires_in`) until `start_proposal` or `discard_proposal`. Refused as
        `submit` refuses a request (`plan_rejected`, `no_planner`, `no_capable_device`)."""
        ...

    async def start_proposal(self, proposal_id: str) -> Run:
        """Run a proposal as it was shown (its constellation gets the id the proposal
        named). `RequestRejected` `unknown_proposal` if it does not wait: never made
        there, expired, dropped, discarded or started already (the reason says which)."""
        ...

    async def discard_proposal(self, proposal_id: str) -> Discarded:
        """Drop a proposal; nothing runs. `discarded` is false if it had ended already;
        `unknown_proposal` for one that was started or never made there."""
        ...

    def run(self, constellation_id: str) -> Run:
        """A constellation already submitted (to follow, wait for or cancel)."""
        ...

    async def cancel(self, constellation_id: str, reason: str = "cancelled by a client") -> str:
        """Cancel a constellation; its status afterwards."""
        ...

    async def cancel_star(
        self, constellation_id: str, star_id: str, reason: str = "cancelled by a client"
    ) -> str:
        """Cancel one star of a running constellation; the star's status afterwards."""
        ...

    async def retry(self, constellation_id: str, star_id: str | None = None) -> Run:
        """Run a finished constellation again from where it failed (see `RetryRequest`)."""
        ...

    async def pin_star(self, constellation_id: str, star_id: str, device: str) -> int:
        """Run a star that has not started on `device`; the constellation's new version."""
        ...

    async def enroll(self, name: str) -> str:
        """A new enrolment token for device `name` (shown once; `orrery device` takes it)."""
        ...

    async def approve(self, request: str, approved: bool = True, reason: str = "") -> None:
        """Allow (or refuse) a tool call a device waits on (`approval.needed`'s request)."""
        ...

    async def approvals(self) -> list[PendingApprovalInfo]:
        """The tool calls waiting for a person, oldest first."""
        ...

    async def devices(self) -> list[DeviceEntry]:
        """Every enrolled or connected device and its state."""
        ...

    async def history(self, limit: int = 20, status: str | None = None) -> list[HistoryEntry]:
        """Recorded constellations, newest first."""
        ...

    async def constellation(self, constellation_id: str) -> Snapshot:
        """One constellation now (`constellation_id` may be a unique prefix of its id)."""
        ...

    def events(
        self,
        constellation_id: str | None = None,
        *,
        after_seq: int = 0,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Events after `after_seq`, then live ones: of one constellation (ending after its
        `constellation.finished`; `RunInterrupted` if its record ends without one), or,
        without an id, of the whole fleet (of `types` only, if given) until the caller
        stops iterating."""
        ...

    async def memory_search(self, text: str, limit: int = 5) -> list[MemoryHit]:
        """Remembered requests nearest in meaning to `text`, nearest first, with their
        outcome and plan. `RequestRejected` with code `memory_unavailable` when recall
        cannot be used there."""
        ...

    async def memory_show(self, request_id: str) -> MemoryTree:
        """One remembered request's tree (`request_id`: its id, a unique prefix, or the id
        of a constellation that ran for it); `RequestRejected` `unknown_memory` if none."""
        ...

    async def memory_forget(self, request_id: str) -> MemoryForgotten:
        """Never recall this request again (its record stays); `unknown_memory` if none."""
        ...


class Run:
    """A submitted constellation: stream its events, wait for it, cancel it."""

    def __init__(
        self,
        api: OrreryApi,
        constellation_id: str,
        name: str = "",
        stars: int = 0,
        *,
        rationale: str = "",
    ) -> None:
        self._api = api
        self.id = constellation_id
        self.name = name
        self.stars = stars
        self.rationale = rationale
        self._finished: ConstellationFinished | None = None
        self._last_seq = 0

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every event of the constellation from its start, once each, in order; ends after
        `constellation.finished`. Raises `RunInterrupted` or `ConnectionLost`."""
        async for event in self._api.events(self.id):
            self._seen(event)
            yield event
            if isinstance(event, ConstellationFinished):
                return

    async def wait(self) -> RunResult:
        """Wait for the end; how it ended. Raises like `events`."""
        if self._finished is None:
            async for event in self._api.events(self.id, after_seq=self._last_seq):
                self._seen(event)
                if self._finished is not None:
                    break
        if self._finished is None:  # the stream ended without it: not expected
            raise RuntimeError(f"the events of {self.id!r} ended before it finished")
        return RunResult.of(self._finished)

    async def cancel(self, reason: str = "cancelled by a client") -> str:
        return await self._api.cancel(self.id, reason)

    async def snapshot(self) -> Snapshot:
        return await self._api.constellation(self.id)

    def _seen(self, event: Event) -> None:
        self._last_seq = max(self._last_seq, event.seq)
        if isinstance(event, ConstellationFinished):
            self._finished = event


@dataclass(frozen=True, slots=True)
class Submission:
    """What `submit` was given, sorted out: exactly one of `plan_text` and `request`."""

    plan_text: str | None
    request: str | None
    source: str


async def read_submission(
    plan_or_request: str | Path | None,
    request: str | None,
    plan_text: str | None,
    source: str,
) -> Submission:
    """Sort `submit`'s arguments: a `Path` is a plan file (read here; `OSError` if it
    cannot be), text that is a YAML mapping with `stars` is a plan, other text a request
    in words; `ValueError` unless exactly one plan or request was given."""
    if isinstance(plan_or_request, Path):
        text = await asyncio.to_thread(plan_or_request.read_text, encoding="utf-8")
        plan_text = _given_once(plan_text, text)
        source = str(plan_or_request)
    elif plan_or_request is not None:
        if looks_like_plan(plan_or_request):
            plan_text = _given_once(plan_text, plan_or_request)
        else:
            request = _given_once(request, plan_or_request)
    if (plan_text is None) == (request is None):
        raise ValueError("give exactly one plan or request")
    return Submission(plan_text, request, source)


def looks_like_plan(text: str) -> bool:
    """True for YAML text that is a mapping with `stars` (a plan); a sentence is not."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "stars" in data


def _given_once(explicit: str | None, positional: str) -> str:
    if explicit is not None:
        raise ValueError("give exactly one plan or request")
    return positional


__all__ = ["OrreryApi", "Run", "RunResult", "Submission", "looks_like_plan", "read_submission"]
